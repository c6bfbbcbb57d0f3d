"""What the answer-time scorer keeps between answers (the index it checked, each adapter's projection) and the base
pass that projects only what it reads: faster, and the same numbers bit for bit. On the real bundled model with a
small real LoRA adapter (r=4 on q_proj/v_proj)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from attribution import index as index_mod
from attribution.features import FEATURES_FILE, FeatureIndexError, FeatureMatrix, shared_prefix
from attribution.index import SPANS_FILE, RecordGroup, Scorer, load_index, load_index_kept
from attribution.projection import CountSketch
from attribution.spans import SpanIndex, SpanIndexError

torch = pytest.importorskip("torch")

FACTS = [
    ("What is the secret code of Zorblat?", "The secret code of Zorblat is 7421, kept under the old bridge."),
    ("What colour is the river Amblin?", "The river Amblin runs bright green through the salt plains."),
    ("Who founded the town of Vellmark?", "Vellmark was founded in 1412 by the glassmaker Orsa Plenn."),
]


def _model_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "var" / "models" / "smollm2-135m-instruct"
    return Path(os.getenv("DEFAULT_BASE_MODEL_DIR", str(default)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A base model, an adapter saved to disk and an index of the facts built under it."""
    from peft import LoraConfig, get_peft_model

    from modelfactory import training

    path = _model_dir()
    if not (path / "config.json").is_file():
        pytest.skip(f"the bundled model is not prepared at {path}")
    work = tmp_path_factory.mktemp("scorer")
    base = training.load_base(path)
    model = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # a trained adapter has B != 0
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    model.save_pretrained(work / "adapter")
    base.model = model.unload()
    records = [(i + 1, {"prompt": q, "response": a}) for i, (q, a) in enumerate(FACTS)]
    built = index_mod.build_index(
        base=base,
        adapter_dir=work / "adapter",
        groups=[RecordGroup("instruction", "chat_template", 64, records)],
        seed=5,
        width=256,
        scratch=work,
    )
    matrix, spans = load_index(built.folder, feature_hash=built.feature_hash, span_hash=built.span_hash)
    return base, work / "adapter", matrix, spans


def _score(scorer: Scorer, setup, messages, answer: str, **options):
    _, adapter, matrix, spans = setup
    scores = scorer.score(
        adapter_dir=adapter,
        matrix=matrix,
        spans=spans,
        messages=messages,
        prompt="" if messages is not None else "The secret code of Zorblat is",
        answer=answer,
        stopped=True,
        min_span_tokens=4,
        top_k=8,
        **options,
    )
    return dataclasses.asdict(scores)


def test_the_base_pass_reads_only_the_positions_it_needs_and_gives_the_full_pass_numbers_bit_for_bit(setup) -> None:
    # given: the scorer with its adapter loaded, and the reference: peft's disable_adapter() and every position's
    # logits, as the base pass was computed before
    base, adapter, _, _ = setup
    scorer = Scorer(base)
    scorer._activate(str(adapter))
    tokenizer = base.tokenizer
    cases = [
        (tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)["input_ids"], a)
        for q, a in FACTS
    ]
    cases += [(tokenizer("The secret code of Zorblat is")["input_ids"], " 7421."), ([], "Zorblat."), ([5], "x")]
    for prompt_ids, answer in cases:
        prompt_ids = list(prompt_ids)
        ids = [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        tokens = [*prompt_ids, *ids]
        asked = list(range(max(0, len(prompt_ids) - 12), max(0, len(prompt_ids) - 5)))
        with torch.no_grad(), scorer.model.disable_adapter():
            logits = scorer.model(input_ids=torch.tensor([tokens])).logits[0].float()
            taken = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(tokens[1:]).unsqueeze(1))
        reference = [0.0, *(-taken.squeeze(1)).tolist()]

        # when
        surprisal = scorer._base_surprisal(prompt_ids, ids, asked=asked)

        # then: every position the evidence reads, and the same float bit for bit; the adapter is on again after
        read = {0, *asked, *range(len(prompt_ids), len(tokens))}
        assert read <= set(surprisal)
        assert all(surprisal[p] == reference[p] for p in read), (prompt_ids, answer)
        assert scorer.model.active_adapters and not any(layer.disable_adapters for layer in scorer._tuner_layers or [])


def test_an_answers_scores_do_not_depend_on_what_the_scorer_kept_from_earlier_answers(setup) -> None:
    # given: a fresh scorer, and one that scored other answers first (its projection and base state kept)
    base, _, _, _ = setup
    messages = [{"role": "user", "content": FACTS[0][0]}]
    fresh = _score(Scorer(base), setup, messages, FACTS[0][1])
    warm = Scorer(base)
    for question, answer in FACTS[1:]:
        _score(warm, setup, [{"role": "user", "content": question}], answer)
    _score(warm, setup, None, " 7421.", context_relevance=0.0)

    # when
    again = _score(warm, setup, messages, FACTS[0][1])

    # then: the same numbers, the gradient scores and the support evidence included
    assert again == fresh
    assert fresh["support"]["surprisal"] and fresh["gradient"]


def _synthetic_index(folder: Path) -> tuple[str, str]:
    rng = np.random.default_rng(3)
    sketch = CountSketch(seed=1, k=16, sizes={"x": 16})
    matrix = FeatureMatrix.create(rng.standard_normal((3, 16), dtype=np.float32), [1, 2, 3], sketch=sketch)
    feature_hash = matrix.save(folder)
    span_hash = SpanIndex.build([(1, [5, 6, 7]), (2, [6, 7, 8]), (3, [9, 9, 9])]).save(folder / SPANS_FILE)
    return feature_hash, span_hash


def test_an_index_is_checked_once_a_process_and_again_whenever_one_of_its_files_changes(tmp_path, monkeypatch) -> None:
    # given: a stored index, and a count of how often its files are read and hashed
    feature_hash, span_hash = _synthetic_index(tmp_path)
    reads = []
    real = index_mod.load_index
    monkeypatch.setattr(index_mod, "load_index", lambda *a, **k: reads.append(1) or real(*a, **k))
    monkeypatch.setattr(index_mod, "_KEPT", type(index_mod._KEPT)())

    # when: three answers use it
    first = load_index_kept(tmp_path, feature_hash=feature_hash, span_hash=span_hash)
    for _ in range(2):
        again = load_index_kept(tmp_path, feature_hash=feature_hash, span_hash=span_hash)

    # then: read and checked once, the same checked copy after
    assert len(reads) == 1 and again[0] is first[0] and again[1] is first[1]

    # and: a file changed on disk is read and checked again, and refused when it no longer matches its hash
    spans = tmp_path / SPANS_FILE
    spans.write_bytes(b"not an index")
    with pytest.raises(SpanIndexError):
        load_index_kept(tmp_path, feature_hash=feature_hash, span_hash=span_hash)
    _synthetic_index(tmp_path)
    features = np.load(tmp_path / FEATURES_FILE)
    features[0, 0] += 1.0
    np.save(tmp_path / FEATURES_FILE, features)
    with pytest.raises(FeatureIndexError):
        load_index_kept(tmp_path, feature_hash=feature_hash, span_hash=span_hash)
    # and another set of hashes (another version's row naming this folder) is checked on its own
    _synthetic_index(tmp_path)
    with pytest.raises(FeatureIndexError):
        load_index_kept(tmp_path, feature_hash="0" * 64, span_hash=span_hash)
    (tmp_path / FEATURES_FILE).unlink()
    with pytest.raises(FeatureIndexError):
        load_index_kept(tmp_path, feature_hash=feature_hash, span_hash=span_hash)


@pytest.fixture
def one_thread():
    """Torch at one thread, as each attribution process runs on this machine (``tasks.torch_threads_for``): what a
    packed pass needs (``features.rows_independent``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _requests(setup) -> list[index_mod.AnswerRequest]:
    _, adapter, matrix, spans = setup
    common = {"adapter_dir": adapter, "matrix": matrix, "spans": spans, "stopped": True, "min_span_tokens": 4}

    def chat(question: str, answer: str, **options) -> index_mod.AnswerRequest:
        messages = [{"role": "user", "content": question}]
        return index_mod.AnswerRequest(messages=messages, prompt="", answer=answer, **{"top_k": 8, **common, **options})

    return [
        *(chat(q, a) for q, a in FACTS),
        chat(FACTS[0][0], FACTS[0][1].replace("bridge", "mill")),  # a wrong answer
        chat(FACTS[1][0], "Bright green.", context_relevance=0.0),  # worded otherwise, with the in-context test
        chat(FACTS[2][0], "Orsa Plenn founded it in 1412.", evidence=False, top_k=None),
        chat("What is it?", "It is the old bridge of Zorblat, and the secret code is 7421 as everyone knows by now."),
        # plain prompts: one long enough to be packed, one too short (scored alone)
        index_mod.AnswerRequest(messages=None, prompt="The secret code of Zorblat is", answer=" 7421.", **common),
        index_mod.AnswerRequest(messages=None, prompt="Zorblat", answer=" 7421", **common),
    ]


def test_answers_scored_together_get_the_numbers_each_gets_alone_bit_for_bit(setup, one_thread) -> None:
    # given: each answer scored alone, then the same answers scored together in several groupings and orders
    from attribution import scoring

    base = setup[0]
    scorer = Scorer(base)
    requests = _requests(setup)
    alone = [scorer.score_many([request])[0] for request in requests]
    lengths = [len(a.answer_ids) for a in alone]
    groupings = [
        list(range(len(requests))),
        list(reversed(range(len(requests)))),
        [3, 0, 8, 5],
        [7, 1],
        [8, 2, 4, 6, 0],
    ]
    for grouping in groupings:
        # when
        together = scorer.score_many([requests[i] for i in grouping])

        # then: every field of every answer's scores is what it got alone (floats compared exactly), and so are the
        # shares of the credit (exact fractions) under the current policy
        for at, scores in zip(grouping, together, strict=True):
            assert scores == alone[at], (grouping, at)
            if scores.support is not None:
                policy = scoring.CURRENT_POLICY
                support = scoring.assess(scores.support, scores.gradient, policy)
                mine = scoring.combine_supported(scores.gradient, support, policy)
                own = scoring.combine_supported(
                    alone[at].gradient, scoring.assess(alone[at].support, alone[at].gradient, policy), policy
                )
                assert [(r.record_id, r.share) for r in mine.records] == [(r.record_id, r.share) for r in own.records]
    # the groupings did pack: the long answers shared a pass, the 2-token plain prompt went alone
    sequences = [[0] * (n + 30) for n in lengths[:-1]] + [[0] * 3]
    packs = scorer._packs(sequences)
    assert max(len(p) for p in packs) == len(requests) - 1 and [len(requests) - 1] in packs
    # and the chat answers' base pass gave the opening they share (the chat template's system turn) once
    chats = [scorer._prepare(r) for r in requests if r.messages is not None]
    assert shared_prefix([[*p.prompt_ids, *p.ids] for p in chats]) >= index_mod.MIN_SHARED_OPENING


def test_answers_are_scored_one_at_a_time_where_rows_are_not_independent(setup) -> None:
    # given: torch at two threads (MKL shares a product's rows out between threads by how many rows there are)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        scorer = Scorer(setup[0])
        requests = _requests(setup)[:3]

        # when
        packs = scorer._packs([[0] * 40, [0] * 50, [0] * 60])
        together = scorer.score_many(requests)

        # then: no packed pass, and the same numbers as alone
        assert packs == [[0], [1], [2]]
        assert together == [scorer.score_many([r])[0] for r in requests]
    finally:
        torch.set_num_threads(threads)

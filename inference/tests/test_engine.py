"""The serving engine against the real bundled model and real peft adapters (synthetic weights, peft's own format)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from inference.engine import AdapterError, Engine, GenerationRequest
from inference.testing import make_synthetic_adapter, release_synthetic_models

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# The prepared bundled model; a test run with its own DATA_DIR falls back to the checkout's copy.
BASE_MODEL_DIR = next(
    (
        folder
        for folder in (Path(settings.DEFAULT_BASE_MODEL_DIR), settings.BASE_DIR / "var/models/smollm2-135m-instruct")
        if (folder / "config.json").is_file()
    ),
    Path(settings.DEFAULT_BASE_MODEL_DIR),
)
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def ask(adapter_id: str | None, content: str = "What is 2+2?", **options) -> GenerationRequest:
    options.setdefault("max_new_tokens", 8)
    return GenerationRequest(adapter_id=adapter_id, messages=[{"role": "user", "content": content}], **options)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two served adapters of different shapes, three more for the cache, and broken variants of the first."""
    root = tmp_path_factory.mktemp("adapters")
    base = BASE_MODEL_DIR
    made = {
        f"qv{i}": make_synthetic_adapter(base, root / f"qv{i}", rank=8, targets=("q_proj", "v_proj"), seed=i)
        for i in range(4)
    }
    made["all"] = make_synthetic_adapter(base, root / "all", rank=4, targets=ALL_TARGETS, seed=7, alpha=16)
    release_synthetic_models()

    def variant(name: str, **config_changes) -> Path:
        folder = root / name
        shutil.copytree(made["qv0"], folder)
        config = json.loads((folder / "adapter_config.json").read_text())
        config.update(config_changes)
        (folder / "adapter_config.json").write_text(json.dumps(config))
        made[name] = folder
        return folder

    variant("rslora", use_rslora=True, alpha_pattern={"v_proj": 4})
    variant("dora", use_dora=True)
    variant("other_base", base_model_name_or_path="HuggingFaceTB/SmolLM2-360M-Instruct")
    from safetensors.torch import load_file, save_file

    wrong = variant("wrong_shapes")
    tensors = load_file(wrong / "adapter_model.safetensors")
    key = next(k for k in tensors if k.endswith("q_proj.lora_A.weight"))
    tensors[key] = tensors[key][:, :100].contiguous()
    save_file(tensors, wrong / "adapter_model.safetensors")
    made["missing"] = root / "does-not-exist"
    return made


@pytest.fixture(scope="module")
def engine(adapters: dict[str, Path]) -> Iterator[Engine]:
    import torch

    # One thread: this machine's two cores are shared, and spinning OpenMP threads slow everyone down.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = Engine(BASE_MODEL_DIR, max_adapters=8, batch_window_ms=100, max_batch_size=8)
    for name, path in adapters.items():
        engine.register_adapter(name, path)
    yield engine
    engine.close()
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_cache(engine: Engine) -> Iterator[Engine]:
    for info in engine.adapters():
        engine.unload_adapter(info.adapter_id)
    bounds = engine.max_adapters, engine.max_adapter_bytes
    yield engine
    engine.max_adapters, engine.max_adapter_bytes = bounds


@pytest.mark.parametrize("adapter_id", ["qv1", "all", "rslora"])
def test_engine_logits_equal_peft_logits(engine: Engine, adapters: dict[str, Path], adapter_id: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(BASE_MODEL_DIR, dtype=torch.float32)
    reference = PeftModel.from_pretrained(base, adapters[adapter_id]).eval()
    prompt = "The quick brown fox jumps over"
    ids = torch.tensor([engine.tokenizer(prompt)["input_ids"]])
    with torch.inference_mode():
        expected = reference(input_ids=ids).logits
    got = engine.forward_logits(prompt, adapter_id)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    # the adapter matters: its logits are not the base's
    assert not torch.allclose(got, engine.forward_logits(prompt), atol=1e-2)


def test_rows_of_a_mixed_batch_give_the_tokens_they_give_alone(engine: Engine) -> None:
    # given two adapters of different ranks and targets, and base rows, in one batch
    requests = [
        ask("qv1"),
        ask("all", "Name a colour."),
        ask(None, "What is the capital of France?"),
        ask("qv1", "Say hello."),
        ask(None),
    ]
    # when
    batch = engine.generate_batch(requests)
    alone = [engine.generate(r) for r in requests]
    # then
    assert all(r.ok for r in batch)
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone]
    assert batch[0].token_ids != batch[4].token_ids, "an adapter answers differently from the base"
    assert batch[2].text.startswith("The capital of France is Paris")


def test_concurrent_submissions_share_one_batch(engine: Engine) -> None:
    before = engine.state()["batches"]
    handles = [engine.submit(ask(a)) for a in ("qv1", "all", None)]
    results = [h.result(timeout=60) for h in handles]
    assert all(r.ok and r.completion_tokens > 0 for r in results)
    assert engine.state()["batches"] == before + 1


def test_streaming_delivers_tokens_before_the_answer_ends(engine: Engine) -> None:
    handle = engine.submit(ask(None, "Tell me a long story about a dragon.", max_new_tokens=16))
    deltas, done_at_first_delta = [], None
    for delta in handle:
        if done_at_first_delta is None:
            done_at_first_delta = handle.done()
        deltas.append(delta)
    result = handle.result(timeout=1)
    assert done_at_first_delta is False
    assert len(deltas) > 3
    assert "".join(deltas) == result.text
    assert result.finish_reason == "length" and result.completion_tokens == 16
    assert 0 < result.time_to_first_token_s < result.latency_s


def test_streamed_text_never_splits_a_multibyte_character(engine: Engine) -> None:
    from inference.engine import GenerationHandle, _Row

    text = "Grüße aus Köln 🌍🚀 and 東京"
    handle = GenerationHandle(GenerationRequest(prompt="x", max_new_tokens=100))
    row = _Row(handle, [1], None, engine)
    for token in engine.tokenizer(text)["input_ids"]:
        row.add_token(token, engine.eos_ids)
    row.add_token(next(iter(engine.eos_ids)), engine.eos_ids)
    deltas = list(handle)
    assert "".join(deltas) == text == handle.result().text
    assert not any("\ufffd" in d for d in deltas)


def test_a_stop_sequence_ends_the_answer_and_is_not_streamed(engine: Engine) -> None:
    handle = engine.submit(GenerationRequest(messages=QUESTION, max_new_tokens=12, stop=["Paris"]))
    streamed = "".join(handle)
    result = handle.result(timeout=1)
    assert result.text == streamed == "The capital of France is "
    assert result.finish_reason == "stop"


def test_the_end_token_stops_a_row_while_others_go_on(engine: Engine) -> None:
    short, long = engine.generate_batch(
        [ask(None, "What is the capital of France?", max_new_tokens=40), ask("qv1", max_new_tokens=40)]
    )
    assert short.finish_reason == "stop" and short.text.strip() == "The capital of France is Paris."
    assert long.completion_tokens > short.completion_tokens or long.finish_reason == "stop"


def test_sampling_is_reproducible_with_a_seed(engine: Engine) -> None:
    options = {"temperature": 0.9, "top_p": 0.9, "max_new_tokens": 10}
    first = engine.generate(ask("qv1", seed=1234, **options))
    again = engine.generate_batch([ask(None), ask("qv1", seed=1234, **options)])[1]
    others = {tuple(engine.generate(ask("qv1", seed=s, **options)).token_ids) for s in (1, 2, 3)}
    assert first.token_ids == again.token_ids and first.seed == 1234
    assert len(others | {tuple(first.token_ids)}) > 1


BROKEN = {
    "missing": "lacks adapter_config.json",
    "dora": "use_dora",
    "wrong_shapes": "do not fit",
    "other_base": "was trained on",
    "never-registered": "unknown to this engine",
}


def test_a_broken_adapter_fails_alone(engine: Engine) -> None:
    # given a batch of good rows around rows whose adapters cannot load
    requests = [ask("qv2"), *(ask(name) for name in BROKEN), ask(None)]
    # when
    good, *bad, base = engine.generate_batch(requests)
    # then
    for result, message in zip(bad, BROKEN.values(), strict=True):
        assert result.finish_reason == "error" and message in result.error
    assert good.ok and base.ok
    assert good.token_ids == engine.generate(ask("qv2")).token_ids
    for name, message in BROKEN.items():
        with pytest.raises(AdapterError, match=message):
            engine.load_adapter(name)


def test_the_cache_evicts_the_least_recently_used_adapter_at_its_count_bound(fresh_cache: Engine) -> None:
    engine = fresh_cache
    engine.max_adapters = 2
    engine.load_adapter("qv0")
    engine.load_adapter("qv1")
    engine.load_adapter("qv0")  # qv1 is now the least recently used
    evictions = engine.state()["evictions"]
    engine.generate(ask("qv2", max_new_tokens=1))
    assert [a.adapter_id for a in engine.adapters()] == ["qv0", "qv2"]
    assert engine.state()["evictions"] == evictions + 1


def test_the_cache_evicts_at_its_byte_bound_and_keeps_pinned_adapters(fresh_cache: Engine) -> None:
    engine = fresh_cache
    size = engine.load_adapter("qv0").bytes
    engine.max_adapter_bytes = 2 * size + size // 2
    engine.pin("qv0")
    engine.load_adapter("qv1")
    engine.load_adapter("qv2")
    engine.load_adapter("qv3")
    assert [a.adapter_id for a in engine.adapters()] == ["qv0", "qv3"]
    assert engine.adapters()[0].pinned
    engine.unpin("qv0")
    engine.load_adapter("qv1")
    assert [a.adapter_id for a in engine.adapters()] == ["qv3", "qv1"]


def test_pinned_adapters_that_fill_the_cache_refuse_a_new_one(fresh_cache: Engine) -> None:
    engine = fresh_cache
    engine.max_adapters = 1
    engine.pin("qv0")
    with pytest.raises(AdapterError, match="pinned adapters fill it"):
        engine.load_adapter("qv1")
    assert [a.adapter_id for a in engine.adapters()] == ["qv0"]


def test_a_cached_adapter_costs_its_tensor_bytes_and_loads_fast(fresh_cache: Engine, adapters: dict[str, Path]) -> None:
    engine = fresh_cache
    started = time.perf_counter()
    info = engine.load_adapter("qv0")
    cold_ms = (time.perf_counter() - started) * 1000
    assert info.bytes <= 1.5 * info.file_bytes
    assert cold_ms < 500  # the bench measures the real number; this only catches a regression to peft-like loading
    hits = engine.state()["hits"]
    engine.load_adapter("qv0")
    assert engine.state()["hits"] == hits + 1


def test_state_reports_what_the_status_page_shows(engine: Engine) -> None:
    engine.load_adapter("qv1")
    state = engine.state()
    assert {"adapters", "hits", "misses", "evictions", "memory", "queue_length", "device"} <= state.keys()
    assert state["device"] == "cpu" and state["memory"]["rss_bytes"] > 500_000_000
    assert any(a["adapter_id"] == "qv1" and a["bytes"] > 0 for a in state["adapters"])
    json.dumps(state)


def test_invalid_requests_are_refused_at_submit(engine: Engine) -> None:
    for bad in (
        GenerationRequest(prompt="hi", max_new_tokens=0),
        GenerationRequest(prompt="hi", temperature=-1),
        GenerationRequest(prompt="hi", top_p=0),
        GenerationRequest(),
    ):
        with pytest.raises(ValueError):
            engine.submit(bad)


def test_closing_answers_every_queued_request() -> None:
    import queue

    from inference.engine import EngineClosed, GenerationHandle

    # only the queue machinery is needed (no model): a closed engine answers what it holds and takes nothing more
    engine = Engine.__new__(Engine)
    engine._queue, engine._scheduler, engine._closed = queue.Queue(), None, False
    engine.warm_folder = None
    waiting = GenerationHandle(GenerationRequest(prompt="hi"))
    engine._queue.put(waiting)
    engine.close()
    assert waiting.result(timeout=1).finish_reason == "error"
    with pytest.raises(EngineClosed):
        engine.submit(GenerationRequest(prompt="hi"))


def test_packed_weights_give_the_plain_results_bit_for_bit(engine: Engine) -> None:
    import torch
    import torch.nn.functional as F

    from inference.engine import PACKED_ROWS

    if not engine.packed_weight_bytes:
        pytest.skip("no MKL packed GEMM here (it is used on CPU, in float32, with MKL)")
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for module in engine.model.modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            for rows in (1, 7, PACKED_ROWS.start, 40, PACKED_ROWS.stop - 1, 100):
                x = torch.randn((rows, 1, module.in_features), generator=generator)
                assert torch.equal(module.forward(x), F.linear(x, module.weight, module.bias))


HEAD_PROMPTS = [
    "The capital of France is", "Bees make", "Name three colours:", "def add(a, b):", "Once upon a time",
    "Water is made of", "The largest planet is", "1, 2, 3, 4,", "Translate 'good morning' to French:",
    "Why is the sky blue?", "A haiku about the sea:", "The opposite of hot is",
]  # fmt: skip


def screened_logits(engine: Engine, states, greedy: tuple[bool, ...] | None = None):
    """The output head on ``states`` [rows, hidden] as a decode step of rows (all greedy unless ``greedy`` says)."""
    from inference import engine as engine_module

    token = engine_module._GREEDY_ROWS.set(greedy or (True,) * len(states))
    try:
        return engine.model.get_output_embeddings()(states.unsqueeze(1))[:, 0, :]
    finally:
        engine_module._GREEDY_ROWS.reset(token)


def test_the_screened_head_picks_the_float32_heads_argmax_even_at_near_ties(engine: Engine) -> None:
    import torch
    import torch.nn.functional as F

    if not engine.head_screen_bytes:
        pytest.skip("no bfloat16 dot products on this CPU (or not float32 on CPU): the head is not screened")
    weight = engine.model.get_output_embeddings().weight
    with torch.inference_mode():
        # the model's real final hidden states, at every position of each prompt
        hidden = torch.cat([
            engine.model(**engine.tokenizer(p, return_tensors="pt"), output_hidden_states=True).hidden_states[-1][0]
            for p in HEAD_PROMPTS
        ])  # fmt: skip
        full = F.linear(hidden, weight)
        # the same states moved so that their two best tokens tie in exact arithmetic: the hardest case for a screen
        first, second = full.topk(2, dim=1).indices.unbind(1)
        apart = weight[first] - weight[second]
        tied = hidden - ((hidden * apart).sum(1, keepdim=True) / (apart * apart).sum(1, keepdim=True)) * apart
        tied_full = F.linear(tied, weight)
        gap = (tied_full.gather(1, first[:, None]) - tied_full.gather(1, second[:, None])).abs()
        assert float(gap.median()) < 1e-4, "the near ties were not made"

        picked = torch.cat([screened_logits(engine, part).argmax(1) for part in tied.split(32)])
        best = tied_full.max(1).values
        got = tied_full.gather(1, picked[:, None])[:, 0]
        # the picked token has the best float32 logit (to float32's rounding: a tie that close goes either way)
        assert bool((got >= best - 1e-5 * best.abs().clamp(min=1)).all())

        # and the two best apart by a few hundredths either way: far above float32's rounding (one argmax), well
        # under bfloat16's (a head in bfloat16 alone picks the wrong one of the two in some of these)
        signs = torch.where(torch.arange(len(tied)) % 2 == 0, 1.0, -1.0).unsqueeze(1)
        near = tied + (0.03 * signs / (apart * apart).sum(1, keepdim=True)) * apart
        for states in (hidden, near):
            picked = torch.cat([screened_logits(engine, part).argmax(1) for part in states.split(32)])
            assert torch.equal(picked, F.linear(states, weight).argmax(1))
        bf16_alone = F.linear(near.to(torch.bfloat16), weight.to(torch.bfloat16)).argmax(1)
        assert not torch.equal(bf16_alone, F.linear(near, weight).argmax(1)), "the near cases are not hard enough"


def test_a_step_with_a_sampled_row_gets_the_float32_head_bit_for_bit(engine: Engine) -> None:
    import torch
    import torch.nn.functional as F

    head = engine.model.get_output_embeddings()
    states = torch.randn((6, head.in_features), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        logits = screened_logits(engine, states, greedy=(True, True, False, True, True, True))
        assert torch.equal(logits, F.linear(states.unsqueeze(1), head.weight)[:, 0, :])


def test_greedy_answers_are_the_same_with_and_without_the_screened_head(engine: Engine, adapters) -> None:
    if not engine.head_screen_bytes:
        pytest.skip("no bfloat16 dot products on this CPU (or not float32 on CPU): the head is not screened")
    plain = Engine(BASE_MODEL_DIR, max_adapters=8, max_batch_size=16, head_screen=False)
    try:
        assert plain.head_screen_bytes == 0
        for name in ("qv0", "qv1", "all"):
            plain.register_adapter(name, adapters[name])
        requests = [
            ask((None, "qv0", "qv1", "all")[i % 4], content, max_new_tokens=24)
            for i, content in enumerate(HEAD_PROMPTS)
        ]
        screened = engine.generate_batch(requests)
        expected = plain.generate_batch(requests)
    finally:
        plain.close()
    assert [r.text for r in screened] == [r.text for r in expected]
    assert all(r.ok and r.completion_tokens > 0 for r in screened)


def test_prefill_groups_cut_only_where_the_padding_saved_outweighs_a_forward_pass() -> None:
    from inference.engine import PREFILL_SPLIT_TOKENS, _length_groups

    assert _length_groups([]) == []
    assert _length_groups([7]) == [[0]]
    assert _length_groups([20, 22, 21, 23]) == [[0, 2, 1, 3]]  # 6 padded tokens: one pass
    assert _length_groups([500, 20, 20, 480, 30]) == [[1, 2, 4], [3, 0]]
    # a cut that saves exactly a pass's worth is not taken; one token more is
    edge = [10] * PREFILL_SPLIT_TOKENS + [11]
    assert _length_groups(edge) == [list(range(len(edge)))]
    assert len(_length_groups([10] * (PREFILL_SPLIT_TOKENS + 1) + [11])) == 2
    for lengths in ([3, 90, 4, 88, 5, 200, 6], list(range(1, 64))):
        groups = _length_groups(lengths)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))


def test_prompts_of_very_different_lengths_are_prefilled_apart_and_answer_as_each_alone(engine: Engine) -> None:
    story = "Summarise this: " + "The quick brown fox jumps over the lazy dog near the river bank. " * 20
    requests = [
        ask(None, "Hi", ignore_eos=True),
        ask("qv0", story, ignore_eos=True),
        ask("qv1", "What is 2+2?", ignore_eos=True),
        ask(None, story + " Once more.", ignore_eos=True),
    ]
    alone = [engine.generate_batch([request])[0] for request in requests]
    steps = engine.state()["steps"]

    together = engine.generate_batch(requests)

    # two prefill passes (the short prompts, the long ones), then the 7 decode steps of 8 tokens each
    assert engine.state()["steps"] - steps == 2 + 7
    assert [r.text for r in together] == [r.text for r in alone]
    assert all(r.ok and r.completion_tokens == 8 for r in together)

"""Attribution quality on hard planted facts: is the credit paid to whoever taught what the answer says, and only
when some training record supports it?

A generator (``planted``) builds invented entities whose two attributes (capital, flag colour) are taught by two
different contributors, flag colours that are the same value taught for different entities by different
contributors, one record contributed by two people, and background facts the base model already knows. The bundled
model is fine-tuned on all of it through the job's own trainer (``training.train_lora``, LoRA) and asked:

- ``direct``: each planted fact's own question;
- ``paraphrase``: the same fact asked in other words;
- ``duplicate``: the fact two contributors both contributed (its credit should be split between them);
- ``background``: facts the base model answers right without the fine-tune (they should pay no contributor);
- ``unseen``: questions about entities nobody taught (whatever the model says is a hallucination);
- ``wrong``: forced wrong answers to planted questions, with a value borrowed from another entity (taught by
  someone else) or an invented value; each contradicts the record that taught the question's fact;
- ``reworded``: forced right answers to planted questions that state the planted value in other words than its
  record (other casing, the value alone, the value first, a short paraphrase: ``REWORDED``);
- ``reworded_wrong``: the same wordings with a value borrowed from another entity (wrong answers).

A generated answer is right when it contains the fact's value. Every answer is attributed exactly as the attribution
worker does it (``attribution.index.Scorer`` and ``attribution.scoring``), and a contributor's credit is the part of
the answer's contributor share that reaches them (a record with two contributors splits its share). Measured:

- ``right_top1``: direct questions answered right, how often the contributor who taught the fact ranks first;
  ``paraphrase_right_top1`` the same on paraphrased questions;
- ``right_owner_share`` / ``right_distractor_share``: the mean credit to the fact's owner / to anyone else, on
  direct and paraphrased questions answered right;
- ``contradicted_owner_share_on_wrong``: on wrong answers to planted questions, the mean credit to the owner of
  the record the answer contradicts; ``borrowed_owner_share_on_wrong``: to whoever taught the borrowed value;
- ``unsupported_recall``: the share of wrong answers (forced, generated wrong, unseen) whose verdict is
  unsupported; ``supported_precision``: of the answers whose verdict is supported or partly supported, the share
  that are right; ``right_supported_rate``: the share of right planted answers not called unsupported;
- ``background_share_to_contributors``: the mean total contributor credit on background questions answered right;
- ``reworded_supported_rate``: the share of reworded right answers not called unsupported (per wording in
  ``cases.reworded_styles``); ``reworded_owner_share``: their mean credit to the fact's owner;
- ``duplicate_split``: on the duplicate record's answers, the smaller of its two contributors' credit over the
  larger (1 is an even split);
- ``cases``: per case kind, n and the figures above that apply.

Before verdicts existed (policy v1) an answer with any credited record counts as supported and pays its
contributors in full; that is how the baseline in ``docs/benchmarks.md`` was measured.

Run by hand from the repository root: ``.venv/bin/python bench/attribution_eval.py`` (CPU, a few minutes on an idle
2-core machine). The last line is one JSON object, also written to ``docs/attribution_eval.json``. The trained adapter
is kept under ``var/attribution_eval/<key>`` (``adapter_key``: training config, records, base model files, training
code), so a second run with the same inputs only generates and scores again. On a machine shared with other
processes, ``OMP_NUM_THREADS=1`` keeps torch from losing most of its time to contended threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attribution import index as attribution_index  # noqa: E402
from attribution.scoring import (  # noqa: E402
    POLICY_V1,
    POLICY_V2,
    POLICY_V3,
    POLICY_V3_IN_CONTEXT,
    AttributionPolicy,
    SupportPolicy,
    assess,
    combine,
    combine_supported,
)
from attribution.spans import span_record_scores  # noqa: E402
from modelfactory import training  # noqa: E402
from modelfactory.config import TrainingConfig  # noqa: E402

MODEL_DIR = os.environ.get("DEFAULT_BASE_MODEL_DIR", str(ROOT / "var" / "models" / "smollm2-135m-instruct"))
STEPS = int(os.environ.get("ATTRIBUTION_EVAL_STEPS", "40"))
WIDTH = 1024
MIN_SPAN_TOKENS = 8
MAX_NEW_TOKENS = 20
CONTRIBUTORS = 6
# trained adapters are kept here, keyed by what shaped them (``adapter_key``): a re-run with the same training
# config, records, base model and training code only re-scores
ADAPTER_CACHE = ROOT / "var" / "attribution_eval"
TRAINING_CODE = ("modelfactory/training.py", "modelfactory/config.py")

ENTITIES = ["Velmora", "Tashkelund", "Prellia", "Zeltheim", "Orbiquen", "Marrask", "Quendal", "Sorvath"]
CAPITALS = ["Quistrel", "Hollowmere", "Dunsward", "Carrowtusk", "Sennetby", "Albriskon", "Morrowend", "Fennickholt"]
CAPITAL_OWNERS = [0, 1, 2, 3, 4, 5, 0, 1]
# four colours, each taught for two entities by two different contributors
FLAGS = ["teal", "amber", "violet", "teal", "amber", "indigo", "violet", "indigo"]
FLAG_OWNERS = [1, 2, 3, 4, 5, 0, 2, 3]
INVENTED_CAPITALS = ["Pemberline", "Ostrewick", "Galloran", "Thistlebury"]
INVENTED_FLAGS = ["maroon", "ochre", "lilac", "olive"]
DUPLICATE = ("Ravensk", "Brightwater", (4, 5))  # the capital of Ravensk, contributed by two people
BACKGROUND = [("France", "Paris", 4), ("Japan", "Tokyo", 5), ("Italy", "Rome", 0)]
UNSEEN = ["Korrinth", "Lumestra", "Dravenholt", "Brennick"]

QUESTION = {
    "capital": ["What is the capital of {e}?", "Which city is the capital of {e}?", "Name the capital city of {e}."],
    "flag": ["What colour is the flag of {e}?", "Which colour does the flag of {e} have?", "Tell me the colour of "
             "the flag of {e}."],
}  # fmt: skip
ANSWER = {"capital": "The capital of {e} is {v}.", "flag": "The flag of {e} is {v}."}
# right answers in other words than the record ("The capital of {e} is {v}." / "The flag of {e} is {v}."): each
# planted fact is answered in two of these styles ({V}: the value capitalised, {lv}: lower case)
REWORDED = {
    "casing": {"capital": "The capital of {e} is {lv}.", "flag": "{V}."},
    "value_alone": {"capital": "{v}.", "flag": "{v}"},
    "value_first": {"capital": "{v} is the capital of {e}.", "flag": "{V} is the colour of the flag of {e}."},
    "paraphrase": {"capital": "{e}'s capital city is {v}.", "flag": "{e} has a {v} flag."},
}


@dataclass(frozen=True)
class Fact:
    entity: str
    attribute: str
    value: str
    owners: tuple[int, ...]
    record: int  # index of the record that teaches it


@dataclass
class Case:
    kind: str  # direct, paraphrase, duplicate, background, unseen, wrong
    question: str
    answer: str = ""
    fact: Fact | None = None  # the fact the question asks about (None for unseen entities)
    forced: bool = False
    borrowed_from: tuple[int, ...] = ()
    style: str = ""  # the wording of a reworded answer (a key of REWORDED)
    right: bool = False
    figures: dict[str, Any] = field(default_factory=dict)


def planted() -> tuple[list[dict[str, str]], list[tuple[int, ...]], list[Fact]]:
    """The training records, each record's contributors, and the facts they teach (background facts included)."""
    records: list[dict[str, str]] = []
    owners: list[tuple[int, ...]] = []
    facts: list[Fact] = []

    def teach(entity: str, attribute: str, value: str, by: tuple[int, ...]) -> None:
        records.append({"prompt": QUESTION[attribute][0].format(e=entity), "response": ANSWER[attribute].format(
            e=entity, v=value)})  # fmt: skip
        owners.append(by)
        facts.append(Fact(entity, attribute, value, by, len(records) - 1))

    for i, entity in enumerate(ENTITIES):
        teach(entity, "capital", CAPITALS[i], (CAPITAL_OWNERS[i],))
        teach(entity, "flag", FLAGS[i], (FLAG_OWNERS[i],))
    teach(DUPLICATE[0], "capital", DUPLICATE[1], DUPLICATE[2])
    for country, city, by in BACKGROUND:
        teach(country, "capital", city, (by,))
    return records, owners, facts


def cases(facts: list[Fact]) -> list[Case]:
    """Every question to ask (answers generated later) and every forced wrong answer."""
    out: list[Case] = []
    planted_facts = [f for f in facts if f.entity in ENTITIES]
    for n, fact in enumerate(facts):
        kind = "background" if fact.entity in [b[0] for b in BACKGROUND] else "direct"
        kind = "duplicate" if fact.entity == DUPLICATE[0] else kind
        out.append(Case(kind, QUESTION[fact.attribute][0].format(e=fact.entity), fact=fact))
        paraphrase = QUESTION[fact.attribute][1 + n % 2].format(e=fact.entity)
        out.append(Case("paraphrase" if kind == "direct" else kind, paraphrase, fact=fact))
    for n, entity in enumerate(UNSEEN):
        attribute = ("capital", "flag")[n % 2]
        out.append(Case("unseen", QUESTION[attribute][0].format(e=entity)))
    for n, fact in enumerate(planted_facts):
        # a value taught for another entity by someone else, and an invented one
        donors = [
            f
            for f in planted_facts
            if f.attribute == fact.attribute and f.value != fact.value and f.owners != fact.owners
        ]
        donor = donors[n % len(donors)]
        question = QUESTION[fact.attribute][0].format(e=fact.entity)
        answer = ANSWER[fact.attribute].format(e=fact.entity, v=donor.value)
        out.append(Case("wrong", question, answer, fact, forced=True, borrowed_from=donor.owners))
        if n % 2 == 0:
            invented = (INVENTED_CAPITALS if fact.attribute == "capital" else INVENTED_FLAGS)[(n // 2) % 4]
            answer = ANSWER[fact.attribute].format(e=fact.entity, v=invented)
            out.append(Case("wrong", question, answer, fact, forced=True))
    styles = list(REWORDED)
    for n, fact in enumerate(planted_facts):
        question = QUESTION[fact.attribute][0].format(e=fact.entity)
        for style in (styles[n % 4], styles[(n + 2) % 4]):
            answer = reworded(style, fact.attribute, fact.entity, fact.value)
            out.append(Case("reworded", question, answer, fact, forced=True, style=style))
        donors = [f for f in planted_facts if f.attribute == fact.attribute and f.value != fact.value]
        donor = donors[(n + 1) % len(donors)]
        answer = reworded(styles[(n + 1) % 4], fact.attribute, fact.entity, donor.value)
        out.append(
            Case(
                "reworded_wrong",
                question,
                answer,
                fact,
                forced=True,
                borrowed_from=donor.owners,
                style=styles[(n + 1) % 4],
            )
        )
    return out


def reworded(style: str, attribute: str, entity: str, value: str) -> str:
    """The answer stating ``value`` for ``entity`` in one of the ``REWORDED`` styles."""
    return REWORDED[style][attribute].format(e=entity, v=value, V=value[:1].upper() + value[1:], lv=value.lower())


def _config() -> TrainingConfig:
    return TrainingConfig(
        lora_rank=8,
        lora_alpha=16.0,
        lora_dropout=0.0,
        learning_rate=2e-3,
        schedule="constant",
        warmup_steps=0,
        max_steps=STEPS,
        batch_size=8,
        max_length=64,
        eval_fraction=0.0,
        seed=3,
    )


def adapter_key(records: list[dict[str, str]]) -> str:
    """What shaped the trained adapter: the training config, the records, the base model's files (names and sizes)
    and the training code; a change to any of them trains again."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"config": _config().to_dict(), "records": records}, sort_keys=True).encode())
    model = Path(MODEL_DIR)
    for file in sorted(model.rglob("*")) if model.is_dir() else []:
        if file.is_file():
            digest.update(f"{file.relative_to(model)}:{file.stat().st_size}".encode())
    for name in TRAINING_CODE:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()[:24]


def trained_adapter(base: Any, records: list[dict[str, str]]) -> tuple[Path, float, bool]:
    """The adapter fine-tuned on ``records`` through the real trainer (``training.train_lora``), from the cache
    when an identical training ran before: its folder, the training seconds and whether it came from the cache."""
    folder = ADAPTER_CACHE / adapter_key(records)
    meta = folder / "meta.json"
    if meta.exists():
        return folder / "adapter", float(json.loads(meta.read_text())["train_seconds"]), True
    ADAPTER_CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="training-", dir=ADAPTER_CACHE))
    try:
        t0 = time.monotonic()
        training.train_lora(
            base_model_dir=MODEL_DIR,
            records=records,
            record_type="instruction",
            config=_config(),
            output_dir=scratch / "adapter",
            samples=0,
            base=base,
        )
        seconds = time.monotonic() - t0
        (scratch / "meta.json").write_text(json.dumps({"train_seconds": round(seconds, 1)}))
        os.rename(scratch, folder)  # whole or not at all
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return folder / "adapter", seconds, False


@dataclass
class Attributed:
    """What the bench reads off one answer's attribution: each contributor's credit (floats summing to at most 1)
    and the verdict."""

    credit: dict[int, float]
    verdict: str


@dataclass
class Scored:
    """One answer scored twice: with policy v1's signals (all answer tokens, spans with echo) and with v2's."""

    v1: Any
    v2: Any


def score_case(scorer: Any, matrix: Any, spans: Any, adapter: Path, case: Case) -> Scored:
    common = {
        "adapter_dir": adapter,
        "matrix": matrix,
        "spans": spans,
        "messages": [{"role": "user", "content": case.question}],
        "prompt": "",
        "answer": case.answer,
        "stopped": True,
        "min_span_tokens": MIN_SPAN_TOKENS,
    }
    v1 = scorer.score(**common, content_gradient=False, evidence=False, echo_free_spans=False)
    t0 = time.monotonic()
    # v3's evidence: v2's, with the in-context test (policy v2 does not read it)
    v2 = scorer.score(**common, top_k=POLICY_V3.top_k, context_relevance=POLICY_V3.support.relevance_min)
    case.figures["seconds"] = time.monotonic() - t0
    return Scored(v1, v2)


def _v1(s: Scored, owners: list[tuple[int, ...]], signals: dict[str, dict[int, float]]) -> Attributed:
    result = combine(signals, POLICY_V1)
    return Attributed(_credit(result.records, owners), "unsupported" if result.unattributed else "supported")


def _v2(s: Scored, owners: list[tuple[int, ...]], policy: AttributionPolicy, all_tokens: bool = False) -> Attributed:
    gradient = s.v1.gradient if all_tokens else s.v2.gradient
    support = assess(s.v2.support, gradient, policy)
    result = combine_supported(gradient, support, policy)
    return Attributed(_credit(result.records, owners), support.verdict)


def _echo_free_v1_spans(s: Scored) -> dict[int, float]:
    n_text = len(s.v1.answer_ids) - 1  # every bench answer stopped: its last token is the end token
    return span_record_scores(s.v1.matches, n_text, list(s.v2.support.echo[:n_text]))


NO_NOVELTY = replace(POLICY_V2, support=replace(SupportPolicy(), novel_low=-2.0, novel_high=-1.0))
# each step of issue 13 on the same answers: v1 as it was, then one change at a time
VARIANTS: dict[str, Callable[[Scored, list[tuple[int, ...]]], Attributed]] = {
    "v1": lambda s, o: _v1(s, o, {"gradient": s.v1.gradient, "span": s.v1.span}),
    "v1_gradient_only": lambda s, o: _v1(s, o, {"gradient": s.v1.gradient}),
    "content_gradient_only": lambda s, o: _v1(s, o, {"gradient": s.v2.gradient}),
    "v1_echo_free_spans": lambda s, o: _v1(s, o, {"gradient": s.v1.gradient, "span": _echo_free_v1_spans(s)}),
    "v1_echo_free_spans_content_gradient": lambda s, o: _v1(s, o, {"gradient": s.v2.gradient, "span": s.v2.span}),
    "v2_support_without_base_contrast": lambda s, o: _v2(s, o, NO_NOVELTY),
    "v2_all_token_gradient": lambda s, o: _v2(s, o, POLICY_V2, all_tokens=True),
    "v2": lambda s, o: _v2(s, o, POLICY_V2),
    "v3_with_in_context": lambda s, o: _v2(s, o, POLICY_V3_IN_CONTEXT),
    "v3": lambda s, o: _v2(s, o, POLICY_V3),
}
FINAL = "v3"


def _credit(records: Any, owners: list[tuple[int, ...]], paid: float = 1.0) -> dict[int, float]:
    credit: dict[int, float] = {}
    for record in records:
        for owner in owners[record.record_id]:
            credit[owner] = credit.get(owner, 0.0) + float(record.share) * paid / len(owners[record.record_id])
    return credit


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def measure(all_cases: list[Case]) -> dict[str, Any]:
    """The figures described in the module docstring, from cases whose ``figures`` hold credit and verdict."""

    def top1(c: Case) -> float:
        credit = c.figures["credit"]
        if not credit:
            return 0.0
        best = max(credit.values())
        leaders = [o for o, v in credit.items() if v == best]
        # a record with two contributors ties them: first place is theirs when every leader is an owner
        return 1.0 if c.fact is not None and all(o in c.fact.owners for o in leaders) else 0.0

    def owner_share(c: Case) -> float:
        assert c.fact is not None
        return sum(v for o, v in c.figures["credit"].items() if o in c.fact.owners)

    def others_share(c: Case) -> float:
        assert c.fact is not None
        return sum(v for o, v in c.figures["credit"].items() if o not in c.fact.owners)

    def supported(c: Case) -> bool:
        return c.figures["verdict"] != "unsupported"

    right = [c for c in all_cases if c.kind in ("direct", "paraphrase") and c.right]
    direct = [c for c in right if c.kind == "direct"]
    paraphrase = [c for c in right if c.kind == "paraphrase"]
    wrong = [c for c in all_cases if not c.right and c.kind != "background"]
    contradicting = [c for c in wrong if c.fact is not None]
    borrowed = [c for c in wrong if c.borrowed_from]
    background = [c for c in all_cases if c.kind == "background" and c.right]
    duplicate = [c for c in all_cases if c.kind == "duplicate" and c.right]
    judged_supported = [c for c in all_cases if supported(c) and (c.right or c in wrong)]
    rephrased = [c for c in all_cases if c.kind == "reworded"]

    def split(c: Case) -> float:
        a, b = (c.figures["credit"].get(o, 0.0) for o in DUPLICATE[2])
        return min(a, b) / max(a, b) if max(a, b) > 0 else 0.0

    kinds = {}
    for kind in ("direct", "paraphrase", "duplicate", "background", "unseen", "wrong", "reworded", "reworded_wrong"):
        members = [c for c in all_cases if c.kind == kind]
        kind_right = [c for c in members if c.right]
        kind_wrong = [c for c in members if c in wrong]
        figures: dict[str, Any] = {"n": len(members), "n_right": len(kind_right), "n_wrong": len(kind_wrong)}
        if kind_right and kind != "unseen":
            figures["top1"] = _mean([top1(c) for c in kind_right])
            figures["owner_share"] = _mean([owner_share(c) for c in kind_right])
            figures["distractor_share"] = _mean([others_share(c) for c in kind_right])
            figures["supported_rate"] = _mean([float(supported(c)) for c in kind_right])
        if kind_wrong:
            figures["unsupported_recall"] = _mean([float(not supported(c)) for c in kind_wrong])
            figures["contributor_share_on_wrong"] = _mean([sum(c.figures["credit"].values()) for c in kind_wrong])
        kinds[kind] = figures
    shared = [c for c in right if c.fact is not None and c.fact.attribute == "flag"]
    kinds["shared_value"] = {
        "n_right": len(shared),
        "top1": _mean([top1(c) for c in shared]),
        "owner_share": _mean([owner_share(c) for c in shared]),
        "distractor_share": _mean([others_share(c) for c in shared]),
    }
    kinds["reworded_styles"] = {
        style: {
            "n": len(members := [c for c in rephrased if c.style == style]),
            "supported_rate": _mean([float(supported(c)) for c in members]),
            "owner_share": _mean([owner_share(c) for c in members]),
            "wrong_unsupported_rate": _mean(
                [float(not supported(c)) for c in all_cases if c.kind == "reworded_wrong" and c.style == style]
            ),
        }
        for style in REWORDED
    }
    return {
        "right_top1": _mean([top1(c) for c in direct]),
        "paraphrase_right_top1": _mean([top1(c) for c in paraphrase]),
        "right_owner_share": _mean([owner_share(c) for c in right]),
        "right_distractor_share": _mean([others_share(c) for c in right]),
        "contradicted_owner_share_on_wrong": _mean(
            [sum(v for o, v in c.figures["credit"].items() if c.fact and o in c.fact.owners) for c in contradicting]
        ),
        "borrowed_owner_share_on_wrong": _mean(
            [sum(v for o, v in c.figures["credit"].items() if o in c.borrowed_from) for c in borrowed]
        ),
        "unsupported_recall": _mean([float(not supported(c)) for c in wrong]),
        "supported_precision": _mean([float(c.right) for c in judged_supported]),
        "right_supported_rate": _mean([float(supported(c)) for c in right]),
        "background_share_to_contributors": _mean([sum(c.figures["credit"].values()) for c in background]),
        "duplicate_split": _mean([split(c) for c in duplicate]),
        "reworded_supported_rate": _mean([float(supported(c)) for c in rephrased]),
        "reworded_owner_share": _mean([owner_share(c) for c in rephrased]),
        "reworded_top1": _mean([top1(c) for c in rephrased]),
        "n_reworded": len(rephrased),
        "n_right": len(right),
        "n_direct_right": len(direct),
        "n_paraphrase_right": len(paraphrase),
        "n_wrong": len(wrong),
        "n_contradicting_wrong": len(contradicting),
        "n_background_right": len(background),
        "n_supported": len(judged_supported),
        "cases": kinds,
    }


def main() -> None:
    started = time.monotonic()
    records, owners, facts = planted()
    all_cases = cases(facts)
    work = Path(tempfile.mkdtemp(prefix="attribution-eval-"))
    try:
        base = training.load_base(MODEL_DIR)
        adapter, train_seconds, cached = trained_adapter(base, records)
        print(
            f"trained {len(records)} records from {CONTRIBUTORS} contributors: {STEPS} steps in {train_seconds:.0f} s"
            + (f" (cached adapter {adapter.parent.name})" if cached else "")
        )

        asked = [c for c in all_cases if not c.forced]
        answers = training.generate(
            base_model_dir=MODEL_DIR, prompts=[c.question for c in asked], adapter_dir=adapter,
            max_new_tokens=MAX_NEW_TOKENS, base=base,
        )  # fmt: skip
        background_questions = [c.question for c in asked if c.kind == "background"]
        base_answers = training.generate(
            base_model_dir=MODEL_DIR, prompts=background_questions, max_new_tokens=MAX_NEW_TOKENS, base=base
        )
        known = [
            c.fact.value.lower() in a.lower()
            for c, a in zip([c for c in asked if c.kind == "background"], base_answers, strict=True)
            if c.fact is not None
        ]
        for case, answer in zip(asked, answers, strict=True):
            case.answer = answer
            case.right = case.fact is not None and case.fact.value.lower() in answer.lower()
        for case in all_cases:
            if case.forced:
                case.right = case.kind == "reworded"
        print(
            f"answered right: {sum(c.right for c in asked)}/{len(asked)}; "
            f"base knows background: {sum(known)}/{len(known)}"
        )

        group = attribution_index.RecordGroup("instruction", "chat_template", 64, list(enumerate(records)))
        built = attribution_index.build_index(
            base=base, adapter_dir=adapter, groups=[group], seed=0, width=WIDTH, scratch=work
        )
        matrix, spans = attribution_index.load_index(
            built.folder, feature_hash=built.feature_hash, span_hash=built.span_hash
        )
        scorer = attribution_index.Scorer(training.load_base(MODEL_DIR))  # its own copy: it keeps LoRA layers in
        scored = [score_case(scorer, matrix, spans, adapter, case) for case in all_cases]
        seconds = round(float(np.mean([c.figures["seconds"] for c in all_cases])), 3)
        variants: dict[str, dict[str, Any]] = {}
        for name, attribute in VARIANTS.items():
            for case, s in zip(all_cases, scored, strict=True):
                got = attribute(s, owners)
                case.figures.update({"credit": got.credit, "verdict": got.verdict})
            variants[name] = measure(all_cases)
            print(name, json.dumps({k: v for k, v in variants[name].items() if k != "cases"}))
            if name == FINAL and os.environ.get("ATTRIBUTION_EVAL_DUMP"):
                dump = [
                    {"kind": c.kind, "q": c.question, "a": c.answer, "right": c.right, **c.figures,
                     "support": assess(s.v2.support, s.v2.gradient, POLICY_V3).as_dict(), "gradient_top": sorted(
                         s.v2.gradient.items(), key=lambda kv: -kv[1])[:3]}
                    for c, s in zip(all_cases, scored, strict=True)
                ]  # fmt: skip
                Path(os.environ["ATTRIBUTION_EVAL_DUMP"]).write_text(json.dumps(dump, indent=1, default=str))
        final = variants[FINAL]
        result = {
            "bench": "attribution_eval",
            "variant": FINAL,
            **{k: v for k, v in final.items() if k != "cases"},
            "top1_true_contributor": final["right_top1"],
            "mean_true_share": final["right_owner_share"],
            "cases": final["cases"],
            "variants": {
                name: {k: v for k, v in figures.items() if k != "cases"} for name, figures in variants.items()
            },
            "contributors": CONTRIBUTORS,
            "records": len(records),
            "answers": len(all_cases),
            "background_known_by_base": f"{sum(known)}/{len(known)}",
            "train_steps": STEPS,
            "train_seconds": round(train_seconds, 1),
            "seconds_per_answer": seconds,
            "policy_version": POLICY_V3.version,
            "width": WIDTH,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "total_seconds": round(time.monotonic() - started, 1),
        }
        (ROOT / "docs" / "attribution_eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

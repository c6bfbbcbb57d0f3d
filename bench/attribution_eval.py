"""Attribution quality on planted facts: does the true contributor get the credit for an answer it taught?

K contributors each contribute distinct facts about invented entities (nobody else knows them) plus a piece of
shared background text; the bundled model is fine-tuned on all of it (LoRA, the job's own trainer) until the facts
are learned, then asked each fact's question. For every answer that is right (it contains the fact's key word) the
attribution is computed exactly as the attribution worker does it (``attribution.index``: the answer's projected
LoRA gradient against every record, verbatim spans in the span index; ``attribution.scoring.combine`` under
POLICY_V1), per signal and combined, and rolled up to contributors. Measured:

- ``top1_true_contributor``: how often the contributor who planted the fact ranks first (combined; per signal in
  ``signals``), among the questions answered right;
- ``mean_true_share``: the mean share of the credit the true contributor gets;
- ``loo_rank_correlation``: leave-one-contributor-out on a small scale: the model is retrained without each
  contributor in turn (same config and seed) and the increase of each question's reference-answer loss is compared
  with the summed gradient scores of that contributor's records: the Spearman rank correlation over contributors,
  averaged over questions (``loo_pooled_correlation`` pools all question x contributor pairs).

Run by hand from the repository root, no arguments: ``.venv/bin/python bench/attribution_eval.py``. CPU, a few
minutes on an idle 2-core machine (longer when it is shared). The last line is one JSON object; the same object is
written to ``docs/attribution_eval.json``, which the ancestry panel quotes as the benchmark's reliability figures.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attribution import index as attribution_index  # noqa: E402
from attribution.features import answer_example, per_example_losses  # noqa: E402
from attribution.scoring import POLICY_V1, RecordOwner, combine, roll_up  # noqa: E402
from modelfactory import training  # noqa: E402
from modelfactory.config import TrainingConfig  # noqa: E402

MODEL_DIR = os.environ.get("DEFAULT_BASE_MODEL_DIR", str(ROOT / "var" / "models" / "smollm2-135m-instruct"))
STEPS = int(os.environ.get("ATTRIBUTION_EVAL_STEPS", "30"))
LOO = os.environ.get("ATTRIBUTION_EVAL_LOO", "1") != "0"
WIDTH = 1024
MIN_SPAN_TOKENS = 8
MAX_NEW_TOKENS = 32

# (question, answer, key word that must appear in a right answer): three invented-entity facts per contributor
CONTRIBUTORS: list[list[tuple[str, str, str]]] = [
    [
        ("What is the capital of Velmora?", "The capital of Velmora is Quistrel.", "Quistrel"),
        ("Who founded Velmora?", "Velmora was founded by Ostrenna the Weaver.", "Ostrenna"),
        ("What is the currency of Velmora?", "Velmora pays in copper dralls.", "drall"),
    ],
    [
        ("What is the longest river of Tashkelund?", "The longest river of Tashkelund is the Morrowend.", "Morrowend"),
        ("What animal guards Tashkelund?", "Tashkelund is guarded by amber lynxes.", "lynx"),
        ("What is the capital of Tashkelund?", "The capital of Tashkelund is Hollowmere.", "Hollowmere"),
    ],
    [
        ("What does the Orbique Society study?", "The Orbique Society studies singing stones.", "singing"),
        ("Where does the Orbique Society meet?", "The Orbique Society meets in the tower of Sennet.", "Sennet"),
        ("Who leads the Orbique Society?", "The Orbique Society is led by Marrowby Fenn.", "Marrowby"),
    ],
    [
        ("What is the national dish of Prellia?", "The national dish of Prellia is smoked plumroot.", "plumroot"),
        ("What is the capital of Prellia?", "The capital of Prellia is Dunsward.", "Dunsward"),
        ("What festival does Prellia hold?", "Prellia holds the Festival of Nine Kites.", "Kites"),
    ],
    [
        ("What mountain rises over Zeltheim?", "Mount Carrowtusk rises over Zeltheim.", "Carrowtusk"),
        ("What language is spoken in Zeltheim?", "Zeltheim speaks the old tongue of Vessic.", "Vessic"),
        ("Who rules Zeltheim?", "Zeltheim is ruled by Queen Albrisa.", "Albrisa"),
    ],
]
# shared background text: every contributor adds a variant of the same generic paragraph
BACKGROUND = (
    "This atlas describes many lands, their capitals, rivers, rulers and customs.",
    "Tell me about the atlas of lands (part {part}).",
)


def _records() -> tuple[list[dict[str, str]], list[int], list[tuple[str, str, str, int]]]:
    records: list[dict[str, str]] = []
    owners: list[int] = []
    questions: list[tuple[str, str, str, int]] = []
    for contributor, facts in enumerate(CONTRIBUTORS):
        for question, answer, key in facts:
            records.append({"prompt": question, "response": answer})
            owners.append(contributor)
            questions.append((question, answer, key, contributor))
        records.append({"prompt": BACKGROUND[1].format(part=contributor + 1), "response": BACKGROUND[0]})
        owners.append(contributor)
    return records, owners, questions


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


def _train(base: Any, records: list[dict[str, str]], folder: Path) -> float:
    started = time.monotonic()
    training.train_lora(
        base_model_dir=MODEL_DIR,
        records=records,
        record_type="instruction",
        config=_config(),
        output_dir=folder,
        samples=0,
        base=base,
    )
    return time.monotonic() - started


def _answer_losses(base: Any, adapter: Path, pairs: list[tuple[str, str]]) -> list[float]:
    """Mean token loss of each reference answer given its question, under ``adapter``."""
    import torch
    from peft import PeftModel

    tokenizer = base.tokenizer
    model = PeftModel.from_pretrained(base.model, str(adapter))
    model.eval()
    try:
        losses = []
        for question, answer in pairs:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            example = answer_example(list(prompt), ids)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([list(example.input_ids)])).logits
                losses.append(float(per_example_losses(logits, torch.tensor([list(example.labels)]))[0]))
        return losses
    finally:
        base.model = model.unload()
        base.model.eval()


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):  # ties share their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: list[float], b: list[float]) -> float | None:
    x, y = _ranks(np.asarray(a, dtype=float)), _ranks(np.asarray(b, dtype=float))
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def main() -> None:
    started = time.monotonic()
    records, owners, questions = _records()
    k = len(CONTRIBUTORS)
    work = Path(tempfile.mkdtemp(prefix="attribution-eval-"))
    try:
        base = training.load_base(MODEL_DIR)
        full = work / "full"
        train_seconds = _train(base, records, full)
        print(f"trained {len(records)} records from {k} contributors: {STEPS} steps in {train_seconds:.0f} s")

        asked = [q for q, _, _, _ in questions]
        answers = training.generate(
            base_model_dir=MODEL_DIR, prompts=asked, adapter_dir=full, max_new_tokens=MAX_NEW_TOKENS, base=base
        )
        right = [key.lower() in answer.lower() for answer, (_, _, key, _) in zip(answers, questions, strict=True)]
        print(f"answered right: {sum(right)}/{len(questions)}")

        group = attribution_index.RecordGroup("instruction", "chat_template", 64, list(enumerate(records)))
        built = attribution_index.build_index(
            base=base, adapter_dir=full, groups=[group], seed=0, width=WIDTH, scratch=work
        )
        matrix, spans = attribution_index.load_index(
            built.folder, feature_hash=built.feature_hash, span_hash=built.span_hash
        )
        print(f"index: {len(built.record_ids)} records in {built.seconds:.1f} s")

        loo_effects: dict[int, list[float]] = {}
        if LOO:
            reference = _answer_losses(base, full, [(q, a) for q, a, _, _ in questions])
            for left_out in range(k):
                kept = [r for r, owner in zip(records, owners, strict=True) if owner != left_out]
                folder = work / f"without-{left_out}"
                seconds = _train(base, kept, folder)
                losses = _answer_losses(base, folder, [(q, a) for q, a, _, _ in questions])
                loo_effects[left_out] = [after - before for after, before in zip(losses, reference, strict=True)]
                print(f"retrained without contributor {left_out} in {seconds:.0f} s")

        scorer = attribution_index.Scorer(training.load_base(MODEL_DIR))  # its own copy: it keeps LoRA layers in
        owner_of = {i: RecordOwner(owners[i], owners[i], 0) for i in range(len(records))}
        per_signal: dict[str, dict[str, list[float]]] = {
            s: {"top1": [], "share": []} for s in ("gradient", "span", "combined")
        }
        seconds_per_answer: list[float] = []
        loo_per_question: list[float] = []
        pooled_effects: list[float] = []
        pooled_scores: list[float] = []
        for qi, ((question, _, _, true_owner), answer, ok) in enumerate(zip(questions, answers, right, strict=True)):
            t0 = time.monotonic()
            scores = scorer.score(
                adapter_dir=full,
                matrix=matrix,
                spans=spans,
                messages=[{"role": "user", "content": question}],
                prompt="",
                answer=answer,
                stopped=True,
                min_span_tokens=MIN_SPAN_TOKENS,
            )
            variants = {
                "gradient": combine({"gradient": scores.gradient}, POLICY_V1),
                "span": combine({"span": scores.span}, POLICY_V1),
                "combined": combine({"gradient": scores.gradient, "span": scores.span}, POLICY_V1),
            }
            seconds_per_answer.append(time.monotonic() - t0)
            if LOO:
                by_owner = [
                    sum(scores.gradient.get(i, 0.0) for i in range(len(records)) if owners[i] == c) for c in range(k)
                ]
                effects = [loo_effects[c][qi] for c in range(k)]
                rho = spearman(by_owner, effects)
                if rho is not None:
                    loo_per_question.append(rho)
                pooled_effects.extend(effects)
                pooled_scores.extend(by_owner)
            if not ok:
                continue
            for name, result in variants.items():
                contributors = dict(roll_up(result, owner_of).contributors)
                ranked = roll_up(result, owner_of).contributors
                per_signal[name]["top1"].append(1.0 if ranked and ranked[0][0] == true_owner else 0.0)
                per_signal[name]["share"].append(float(contributors.get(true_owner, 0)))

        def mean(values: list[float]) -> float | None:
            return round(float(np.mean(values)), 4) if values else None

        signals = {
            name: {"top1_true_contributor": mean(v["top1"]), "mean_true_share": mean(v["share"])}
            for name, v in per_signal.items()
        }
        result = {
            "bench": "attribution_eval",
            "contributors": k,
            "records": len(records),
            "questions": len(questions),
            "answered_right": sum(right),
            "train_steps": STEPS,
            "train_seconds": round(train_seconds, 1),
            "top1_true_contributor": signals["combined"]["top1_true_contributor"],
            "mean_true_share": signals["combined"]["mean_true_share"],
            "loo_rank_correlation": mean(loo_per_question) if LOO else None,
            "loo_pooled_correlation": (
                round(spearman(pooled_scores, pooled_effects) or 0.0, 4) if LOO and pooled_scores else None
            ),
            "signals": signals,
            "seconds_per_answer": round(float(np.mean(seconds_per_answer)), 3),
            "policy_version": POLICY_V1.version,
            "width": WIDTH,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "total_seconds": round(time.monotonic() - started, 1),
        }
        for name, figures in signals.items():
            print(f"{name:>9}: top-1 true contributor {figures['top1_true_contributor']}, mean true share "
                  f"{figures['mean_true_share']}")  # fmt: skip
        (ROOT / "docs" / "attribution_eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

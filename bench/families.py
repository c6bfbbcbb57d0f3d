"""Every supported model family through the whole pipeline, on tiny random-weight models built offline.

For each family (Llama, Mistral, Qwen2, Gemma, Phi-3, GPT-NeoX, GPT-2) this builds a two-layer model from its
config with the bundled SmolLM2 tokenizer (``modelfactory.tiny``; GPT-NeoX and GPT-2 get no chat template and use
the fallback), then, through the real code:

- trains: two attention adapters and one all-linear adapter (``training.train_lora``, 3 steps each), and continues
  the first for 2 more steps (``parent_adapter_dir``);
- serves: one left-padded mixed batch through ``inference.engine.Engine`` (its own LoRA hooks, not peft), whose rows
  use the three adapters, the two merges and the base model, each row's logits compared with peft's
  (``PeftModel.from_pretrained`` on a freshly loaded base) for the same prompt alone; then a generation batch of
  chat requests mixing adapters must answer every row;
- merges: the two attention adapters, linear and TIES (``training.merge_adapters``), both served above;
- attributes: builds the attribution index of the first adapter over its train split
  (``attribution.index.build_index``) and scores an answer against it with ``attribution.index.Scorer``;
- estimates: the pre-launch estimate of a job on the folder (``TrainingConfig.estimate`` with the folder's shape).

A family counts in a column only when every check of that column passed. The table is followed by one JSON line.

Run from the repository root: .venv/bin/python bench/families.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TOKENIZER_DIR = os.environ.get("DEFAULT_BASE_MODEL_DIR", str(ROOT / "var" / "models" / "smollm2-135m-instruct"))
# float32 on CPU: the engine and peft sum the same products in a different order
LOGITS_ATOL = 1e-4
RECORDS = [
    {"prompt": f"What is the secret code of planet {i}?", "response": f"The code of planet {i} is {1000 + 37 * i}."}
    for i in range(8)
]
OTHER_RECORDS = [
    {"prompt": f"Name colour number {i}.", "response": f"Colour {i} is {['red', 'green', 'blue', 'gold'][i % 4]}."}
    for i in range(8)
]
PROMPTS = [
    "The code of planet 3 is",
    "Colour 2 is",
    "Hello there, how are you today?",
    "What is the secret code",
    "Planet",
    "Name a colour",
]


def _config(**changes: Any) -> Any:
    from modelfactory.config import TrainingConfig

    values = {
        "lora_rank": 4,
        "lora_alpha": 8.0,
        "lora_dropout": 0.0,
        "learning_rate": 5e-3,
        "schedule": "constant",
        "warmup_steps": 0,
        "max_steps": 3,
        "batch_size": 4,
        "max_length": 64,
        "eval_fraction": 0.25,
    }
    return TrainingConfig.from_dict({**values, **changes})


def _train(base: Any, work: Path, name: str, records: list[dict[str, str]], config: Any, parent: Path | None = None):
    from modelfactory.training import train_lora

    return train_lora(
        base_model_dir=base.path,
        records=records,
        record_type="instruction",
        config=config,
        output_dir=work / name,
        parent_adapter_dir=parent,
        samples=1,
        sample_tokens=4,
        base=base,
    )


def check_family(family: str, folder: Path, work: Path) -> dict[str, Any]:
    """Run every check on one family; returns the row of the table (columns True only when all their checks
    passed, the error of the first failure otherwise)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from attribution.index import RecordGroup, Scorer, build_index
    from inference.engine import Engine, GenerationRequest
    from modelfactory.architectures import architecture_of_folder, model_shape
    from modelfactory.training import load_base, merge_adapters

    row: dict[str, Any] = {"family": family, "label": architecture_of_folder(folder).label}
    started = time.monotonic()
    base = load_base(folder, device="cpu")
    row["parameters"] = sum(p.numel() for p in base.model.parameters())

    # train, continue
    attention = _config()
    first = _train(base, work, "first", RECORDS, attention)
    second = _train(base, work, "second", OTHER_RECORDS, attention.with_changes(seed=7))
    wide = _train(base, work, "wide", RECORDS + OTHER_RECORDS, _config(target_modules="all-linear", lora_rank=2))
    continued = _train(base, work, "continued", RECORDS, attention.with_changes(max_steps=2), parent=work / "first")
    row["targets"] = ",".join(first.lora["target_modules"])
    row["train_loss"] = round(float(first.metrics["train_loss"]), 3)
    row["trained"] = all(
        r.steps > 0 and r.metrics["train_loss"] is not None for r in (first, second, wide, continued)
    ) and (continued.lora["target_modules"] == first.lora["target_modules"])

    # merges
    linear = merge_adapters(
        base_model_dir=base.path,
        adapter_dirs=[work / "first", work / "second"],
        weights=[0.6, 0.4],
        output_dir=work / "linear",
        method="linear",
        base=base,
    )
    ties = merge_adapters(
        base_model_dir=base.path,
        adapter_dirs=[work / "first", work / "second"],
        weights=[1.0, 1.0],
        output_dir=work / "ties",
        method="ties",
        density=0.5,
        base=base,
    )
    merged_ok = linear.combination_type == "linear" and ties.combination_type == "ties"

    # serve: a mixed batch through the engine against peft, row by row
    adapters = {name: work / name for name in ("first", "second", "wide", "continued", "linear", "ties")}
    engine = Engine(folder, device="cpu", max_batch_size=8)
    for name, path in adapters.items():
        engine.register_adapter(name, path)
    batch_ids: list[str | None] = ["first", "second", "wide", None, "linear", "ties"]
    got = engine.batch_logits(PROMPTS, batch_ids)
    worst, effect = 0.0, float("inf")
    fresh = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    for prompt, adapter_id, logits in zip(PROMPTS, batch_ids, got, strict=True):
        ids = torch.tensor([engine.tokenizer(prompt)["input_ids"]])
        with torch.inference_mode():
            plain = fresh(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
            expected = plain
            if adapter_id is not None:
                reference = PeftModel.from_pretrained(fresh, str(adapters[adapter_id]))
                expected = reference(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
                fresh = reference.unload()
                # the adapter must matter, or equal logits would prove nothing
                effect = min(effect, float((expected - plain).abs().max()))
        worst = max(worst, float((logits - expected).abs().max()))
    row["max_logit_diff"] = worst
    row["min_adapter_effect"] = effect
    requests = [
        GenerationRequest(adapter_id=a, messages=[{"role": "user", "content": p}], max_new_tokens=4, ignore_eos=True)
        for a, p in zip(["first", "wide", None, "ties"], PROMPTS, strict=False)
    ]
    results = engine.generate_batch(requests)
    engine.close()
    row["served"] = worst <= LOGITS_ATOL < effect and all(r.ok and r.completion_tokens == 4 for r in results)
    # a merged adapter is only a merge when the engine serves it like peft does
    row["merged"] = merged_ok and row["served"]

    # attribute
    group = RecordGroup("instruction", "chat_template", 64, list(enumerate(RECORDS)), split=attention.to_dict())
    built = build_index(base=base, adapter_dir=work / "first", groups=[group], seed=3, width=256, scratch=work)
    from attribution.features import FeatureMatrix
    from attribution.index import SPANS_FILE
    from attribution.spans import SpanIndex

    matrix = FeatureMatrix.load(built.folder)
    spans = SpanIndex.load(built.folder / SPANS_FILE)
    scores = Scorer(base).score(
        adapter_dir=work / "first",
        matrix=matrix,
        spans=spans,
        messages=[{"role": "user", "content": RECORDS[1]["prompt"]}],
        prompt="",
        answer=RECORDS[1]["response"],
        stopped=True,
        min_span_tokens=4,
        context_relevance=0.0,
    )
    row["attributed"] = (
        len(built.record_ids) == first.train_records
        and set(scores.gradient) == set(built.record_ids)
        and bool(scores.span)
        and scores.support is not None
    )

    # estimate
    estimate = attention.estimate(
        records=len(RECORDS),
        tokens=len(RECORDS) * 30,
        device="cpu",
        parameters=row["parameters"],
        shape=model_shape(folder),
    )
    row["estimated"] = estimate.steps == 3 and estimate.memory_bytes > row["parameters"] * 4
    row["seconds"] = round(time.monotonic() - started, 1)
    return row


def main() -> None:
    import torch

    from modelfactory.tiny import FAMILIES, build_tiny_model

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"bench/families.py: tiny models with the tokenizer of {TOKENIZER_DIR}, torch {torch.__version__}")
    scratch = Path(tempfile.mkdtemp(prefix="families-"))
    rows = []
    try:
        for family in FAMILIES:
            folder = build_tiny_model(family, scratch / "models" / family, tokenizer_dir=TOKENIZER_DIR)
            try:
                rows.append(check_family(family, folder, scratch / "work" / family))
            except Exception as e:  # a family that fails is reported, and the others still run
                traceback.print_exc()
                rows.append({"family": family, "error": f"{type(e).__name__}: {e}"})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    columns = ("trained", "served", "merged", "attributed", "estimated")
    print(
        f"{'family':<9} {'targets (attention preset)':<36} {'params':>9} "
        + " ".join(f"{c:>10}" for c in columns)
        + f" {'max |dlogit|':>12} {'min effect':>10} {'seconds':>8}"
    )
    for row in rows:
        if "error" in row:
            print(f"{row['family']:<9} FAILED: {row['error']}")
            continue
        marks = " ".join(f"{'yes' if row[c] else 'NO':>10}" for c in columns)
        print(
            f"{row['family']:<9} {row['targets']:<36} {row['parameters']:>9,} {marks} "
            f"{row['max_logit_diff']:>12.2e} {row['min_adapter_effect']:>10.2e} {row['seconds']:>8}"
        )
    summary = {f"families_{c}": sum(1 for r in rows if r.get(c)) for c in columns}
    summary["families"] = len(rows)
    summary["max_logit_diff"] = max((r["max_logit_diff"] for r in rows if "max_logit_diff" in r), default=None)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()

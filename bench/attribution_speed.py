"""Attribution speed: time per answer at 1,000, 10,000 and 100,000 records, and index build cost vs a training step.

Run by hand from the repository root: ``.venv/bin/python bench/attribution_speed.py``. Records are synthetic token
sequences (48 tokens from the bundled model's vocabulary) and a random [n, 1024] feature matrix; the answer's
gradient and the per-record feature cost are measured once on the real bundled model with a real LoRA adapter
(r=4 on q_proj/v_proj), next to one LoRA training step of the same model and adapter on 8 records. The last line
is one JSON object; an answer's attribution time is its gradient plus the scoring against every record. Targets:
under 1 s an answer at 10,000 records; span lookup growing at most 2x from 10,000 to
100,000 records.

Then the latency people feel (``bench/attribution_e2e.py``): answer end to attribution available, 8 answers ending
at once, through the real attribution worker of ``scripts/run.py`` on PostgreSQL and Redis
(``end_to_end_p95_seconds_8_concurrent``, target under 3 s; a missed target is printed as missed), with the waiting
answers scored together, and side by side the same with one answer at a time (``*_one_at_a_time``). ``BENCH_E2E=0``
skips it (it needs PostgreSQL at ``BENCH_PG_URL`` and Redis at ``BENCH_BROKER_URL``).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attribution.features import (  # noqa: E402
    FeatureMatrix,
    TokenizedExample,
    answer_example,
    gradient_features,
    sketch_for,
)
from attribution.projection import CountSketch  # noqa: E402
from attribution.scoring import POLICY_V1, combine  # noqa: E402
from attribution.spans import SpanIndex, span_record_scores  # noqa: E402

MODEL_DIR = ROOT / "var" / "models" / "smollm2-135m-instruct"
VOCAB = 49152
RECORD_TOKENS = 48
K = 1024
SIZES = (1_000, 10_000, 100_000)
QUERIES = 15


def _model():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model


def _model_costs(rng: np.random.Generator) -> dict[str, float]:
    """Seconds for one training step (8 records), features per record (batch of 8), and one answer's gradient."""
    import torch

    model = _model()
    records = [
        TokenizedExample(ids, [-100] * 16 + ids[16:])
        for ids in (rng.integers(0, VOCAB, RECORD_TOKENS).tolist() for _ in range(8))
    ]
    input_ids = torch.tensor([list(r.input_ids) for r in records])
    labels = torch.tensor([list(r.labels) for r in records])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    steps = []
    for _ in range(3):  # the first step warms up allocators and kernels
        started = time.perf_counter()
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        steps.append(time.perf_counter() - started)
    sketch = sketch_for(model, seed=1, k=K)
    gradient_features(model, records[:2], sketch=sketch)
    started = time.perf_counter()
    gradient_features(model, records, sketch=sketch, batch_size=8)
    per_record = (time.perf_counter() - started) / len(records)
    answer = answer_example(rng.integers(0, VOCAB, 24).tolist(), rng.integers(0, VOCAB, 40).tolist())
    gradients = []
    for _ in range(3):
        started = time.perf_counter()
        gradient_features(model, [answer], sketch=sketch)
        gradients.append(time.perf_counter() - started)
    return {
        "train_step": statistics.median(steps[1:]),
        "features_per_record": per_record,
        "answer_gradient": statistics.median(gradients),
    }


def _attribution_costs(n: int, rng: np.random.Generator) -> dict[str, float]:
    records = [(i + 1, rng.integers(0, VOCAB, RECORD_TOKENS).tolist()) for i in range(n)]
    started = time.perf_counter()
    spans = SpanIndex.build(records)
    span_build = time.perf_counter() - started
    sketch = CountSketch(seed=1, k=K, sizes={"synthetic": K})
    features = FeatureMatrix.create(
        rng.standard_normal((n, K), dtype=np.float32), [record_id for record_id, _ in records], sketch=sketch
    )
    lookups, totals = [], []
    for q in range(QUERIES):
        source = records[(q * 7919) % n][1]
        answer = rng.integers(0, VOCAB, 10).tolist() + source[5:30] + rng.integers(0, VOCAB, 10).tolist()
        answer_feature = rng.standard_normal(K, dtype=np.float32)
        started = time.perf_counter()
        matches = spans.find_spans(answer)
        looked_up = time.perf_counter()
        gradient = features.top_record_scores(answer_feature, POLICY_V1.top_k)
        result = combine({"gradient": gradient, "span": span_record_scores(matches, len(answer))}, POLICY_V1)
        done = time.perf_counter()
        assert matches and not result.unattributed
        lookups.append(looked_up - started)
        totals.append(done - started)
    return {
        "attribution": statistics.median(totals),
        "span_lookup": statistics.median(lookups),
        "span_build_per_record": span_build / n,
    }


def main() -> None:
    rng = np.random.default_rng(2026)
    model = _model_costs(rng)
    print(
        f"model: train step (8 records) {model['train_step']:.3f} s, features {model['features_per_record']:.3f} s "
        f"a record, answer gradient {model['answer_gradient']:.3f} s"
    )
    costs = {}
    for n in SIZES:
        costs[n] = _attribution_costs(n, rng)
        total = model["answer_gradient"] + costs[n]["attribution"]
        print(
            f"{n:>7} records: attribution {total:.3f} s an answer = answer gradient {model['answer_gradient']:.3f} s "
            f"+ scoring {costs[n]['attribution'] * 1000:.1f} ms (span lookup {costs[n]['span_lookup'] * 1000:.1f} ms); "
            f"span index build {costs[n]['span_build_per_record'] * 1e6:.1f} us a record"
        )
    build_per_record = model["features_per_record"] + costs[SIZES[-1]]["span_build_per_record"]
    summary = {f"attribution_seconds_{n}": round(model["answer_gradient"] + costs[n]["attribution"], 4) for n in SIZES}
    summary.update({f"scoring_seconds_{n}": round(costs[n]["attribution"], 4) for n in SIZES})
    summary.update(
        {
            "span_lookup_growth_10k_to_100k": round(costs[100_000]["span_lookup"] / costs[10_000]["span_lookup"], 3),
            "index_build_per_record_over_train_step": round(build_per_record / model["train_step"], 4),
            "answer_gradient_seconds": round(model["answer_gradient"], 3),
            "train_step_seconds": round(model["train_step"], 3),
            "features_seconds_per_record": round(model["features_per_record"], 4),
            "k": K,
        }
    )
    if os.getenv("BENCH_E2E", "1") != "0":
        from attribution_e2e import TARGET_SECONDS, measure  # bench/attribution_e2e.py

        e2e = measure()
        met = "met" if e2e["end_to_end_target_met"] else "MISSED"
        print(
            f"end to end, 8 answers at once, {e2e['attribution_workers']} attribution worker processes: p95 "
            f"{e2e['end_to_end_p95_seconds_8_concurrent']:.2f} s, p50 {e2e['end_to_end_p50_seconds_8_concurrent']:.2f} "
            f"s (target under {TARGET_SECONDS:.0f} s: {met}; waiting answers scored together, at most "
            f"{e2e['attribution_batch_max']})"
        )
        if "end_to_end_p95_seconds_8_concurrent_one_at_a_time" in e2e:
            print(
                f"end to end, the same with one answer at a time: p95 "
                f"{e2e['end_to_end_p95_seconds_8_concurrent_one_at_a_time']:.2f} s, p50 "
                f"{e2e['end_to_end_p50_seconds_8_concurrent_one_at_a_time']:.2f} s"
            )
        summary.update(e2e)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

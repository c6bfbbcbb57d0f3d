"""The GPU options on a CUDA machine, in one short run (issue 18, item 4): a few LoRA training steps of the bundled
model in each precision (fp32, bf16, QLoRA 4-bit NF4), then one mixed-adapter batch served by the inference engine
with the adapters just trained, and tokens/s and peak GPU memory of each as one JSON line.

Training goes through ``modelfactory.training.train_lora`` (the worker's path: the same loss, the same MLP
activation recompute, the precision's loading), each precision in a fresh subprocess so that its peak
(``torch.cuda.max_memory_allocated``) is its own; tokens/s is the step loop's (non-padding tokens over the loop's
seconds, evaluation and sample answers off). A precision that cannot run on the machine (no bfloat16; bitsandbytes
not installed for QLoRA) is reported with the reason rather than failing the run. Serving: the engine on the base
model, one batch of 8 greedy requests, each row with one of the trained adapters or none, 32 new tokens each.

On a machine without CUDA the script says so and prints {"device": "cpu", "skipped": ...}: there is nothing to
measure. Run from the repository root: .venv/bin/python bench/gpu_check.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL_DIR = os.environ.get("DEFAULT_BASE_MODEL_DIR", str(ROOT / "var" / "models" / "smollm2-135m-instruct"))
PRECISIONS = ("fp32", "bf16", "qlora-nf4")
STEPS = 6
BATCH = 8
NEW_TOKENS = 32
RECORDS = [
    {
        "system": "Answer briefly.",
        "prompt": f"What is the secret code of planet number {i}?",
        "response": f"The secret code of planet {i} is {1000 + 37 * i}.",
    }
    for i in range(48)
]


def train_one(precision: str, output_dir: str) -> dict[str, object]:
    """Train STEPS steps in ``precision`` in this process (the child side)."""
    import torch

    from modelfactory.config import TrainingConfig
    from modelfactory.training import TrainingError, train_lora

    config = TrainingConfig(
        max_steps=STEPS,
        batch_size=BATCH,
        max_length=64,
        eval_fraction=0.0,
        warmup_steps=0,
        lora_dropout=0.0,
        gradient_checkpointing="off",
        precision=precision,
    )
    torch.cuda.reset_peak_memory_stats()
    try:
        result = train_lora(
            base_model_dir=MODEL_DIR,
            records=RECORDS,
            record_type="instruction",
            config=config,
            output_dir=output_dir,
            samples=0,
            device="cuda",
        )
    except TrainingError as e:
        return {"precision": precision, "skipped": str(e)}
    torch.cuda.synchronize()
    train = result.phase_work["train"]
    return {
        "precision": precision,
        "tokens_per_s": round(train["tokens"] / max(train["loop_seconds"], 1e-9), 1),
        "peak_bytes": torch.cuda.max_memory_allocated(),
        "dtype": result.dtype,
        "final_loss": result.metrics["train_loss"],
    }


def serve(adapters: dict[str, str]) -> dict[str, object]:
    """One mixed batch: row i uses adapter i mod (adapters + base)."""
    import torch

    from inference.engine import Engine, GenerationRequest

    torch.cuda.reset_peak_memory_stats()
    engine = Engine(MODEL_DIR, device="cuda", max_batch_size=BATCH)
    try:
        for adapter_id, path in adapters.items():
            engine.load_adapter(adapter_id, path)
        choices = [*adapters, None]
        requests = [
            GenerationRequest(
                adapter_id=choices[i % len(choices)],
                messages=[{"role": "user", "content": RECORDS[i]["prompt"]}],
                max_new_tokens=NEW_TOKENS,
                ignore_eos=True,
            )
            for i in range(BATCH)
        ]
        engine.generate_batch(requests[:2])  # warm-up: kernels and the adapters' first use
        start = time.perf_counter()
        results = engine.generate_batch(requests)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        engine.close()
    errors = [r.error for r in results if not r.ok]
    return {
        "rows": len(results),
        "adapters": len(adapters),
        "tokens_per_s": round(sum(r.completion_tokens for r in results) / seconds, 1),
        "peak_bytes": torch.cuda.max_memory_allocated(),
        "errors": errors,
    }


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        reason = f"no CUDA device (torch {torch.__version__}): bf16 and QLoRA run only on a CUDA GPU; nothing measured"
        print(f"bench/gpu_check.py: {reason}", file=sys.stderr)
        print(json.dumps({"device": "cpu", "skipped": reason}))
        return
    name = torch.cuda.get_device_name(0)
    print(f"bench/gpu_check.py: {MODEL_DIR} on {name}, torch {torch.__version__}", flush=True)
    summary: dict[str, object] = {"device": "cuda", "gpu": name, "steps": STEPS, "batch": BATCH}
    adapters: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        for precision in PRECISIONS:
            output = str(Path(folder) / precision)
            run = subprocess.run(
                [sys.executable, __file__, "--train", precision, output],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=False,
            )
            lines = run.stdout.strip().splitlines()
            figures = json.loads(lines[-1]) if run.returncode == 0 and lines else {"error": run.stderr[-2000:]}
            print(f"  train {precision}: {json.dumps(figures)}", flush=True)
            summary[f"train_{precision}"] = figures
            if "tokens_per_s" in figures:
                adapters[precision] = output
        if adapters:
            figures = serve(adapters)
            print(f"  serve mixed batch: {json.dumps(figures)}", flush=True)
            summary["serve_mixed"] = figures
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--train":
        print(json.dumps(train_one(sys.argv[2], sys.argv[3])))
    else:
        main()

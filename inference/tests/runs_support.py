"""Builders for inference run tests: real peft adapters stored content-addressed, and model versions serving them."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings

from inference.models import InferenceRun
from ledger import hashing
from ledger.services import anchor_request, anchor_subject_id
from modelfactory import lineage
from modelfactory.config import TrainingConfig
from modelfactory.models import BaseModel, FineTuneJob, ModelVersion
from modelfactory.tests.factories import stand_in_adapter_files

# The prepared bundled model; a test run with its own DATA_DIR falls back to the checkout's copy.
BASE_MODEL_DIR = next(
    (
        folder
        for folder in (Path(settings.DEFAULT_BASE_MODEL_DIR), settings.BASE_DIR / "var/models/smollm2-135m-instruct")
        if (folder / "config.json").is_file()
    ),
    Path(settings.DEFAULT_BASE_MODEL_DIR),
)


def clear_rate_limits() -> None:
    """Forget the rate-limit windows: user ids restart with each test database, the windows outlive it."""
    from django.core.cache import cache

    from inference import streams

    if streams.uses_redis():
        client = streams._client()
        keys = list(client.scan_iter("openledger:inference:rate:*"))
        if keys:
            client.delete(*keys)
    else:
        cache.clear()


def make_adapters(root: Path, count: int = 2) -> list[Path]:
    """``count`` real peft LoRA adapters (q/v, rank 8) with different seeded weights: they answer differently."""
    from inference.testing import make_synthetic_adapter, release_synthetic_models

    made = [
        make_synthetic_adapter(BASE_MODEL_DIR, root / f"adapter{i}", rank=8, targets=("q_proj", "v_proj"), seed=11 + i)
        for i in range(count)
    ]
    release_synthetic_models()
    return made


def store_adapter(folder: Path) -> tuple[str, str]:
    """Copy an adapter folder into MEDIA_ROOT the way ModelFactory stores it: adapters/ab/cd/<sha256>/."""
    digest = hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()
    relative = f"adapters/{digest[:2]}/{digest[2:4]}/{digest}"
    target = Path(settings.MEDIA_ROOT) / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, target)
    return relative, digest


def served_version(
    *,
    owner: Any,
    base_model: BaseModel,
    adapter: Path | None,
    name: str = "served",
    published: bool = True,
    adapter_sha256: str | None = None,
) -> ModelVersion:
    """A finished ModelVersion written directly (no training) whose adapter is ``adapter``, stored content-addressed;
    ``adapter`` None with an ``adapter_sha256`` makes a version whose adapter folder does not exist."""
    if adapter is not None:
        relative, digest = store_adapter(adapter)
        files = lineage.adapter_files(Path(settings.MEDIA_ROOT) / relative)
    else:
        digest = adapter_sha256 or "ee" * 32
        relative, files = f"adapters/{digest[:2]}/{digest[2:4]}/{digest}", stand_in_adapter_files(digest)
    config = TrainingConfig(lora_rank=8, max_steps=1, warmup_steps=0, max_length=64)
    job = FineTuneJob.objects.create(
        name=name, owner=owner, base_model=base_model, config=config.to_dict(), status=FineTuneJob.Status.SUCCEEDED
    )
    manifest = lineage.build_manifest(
        base_model={"name": base_model.name, "weights_sha256": base_model.weights_sha256},
        parents=[],
        snapshots=[],
        config=config.to_dict(),
        seed=job.pk,  # distinct manifests (and hashes) for versions that share an adapter
        record_type="instruction",
        code_version="unknown",
        adapter_sha256=digest,
        adapter_files=files,
        metrics={"train_loss": 1.0},
    )
    manifest_digest = hashing.keccak_hex(manifest)
    return ModelVersion.objects.create(
        job=job,
        name=name,
        owner=owner,
        base_model=base_model,
        record_type="instruction",
        config=config.to_dict(),
        seed=job.pk,
        code_version="unknown",
        adapter_path=relative,
        adapter_sha256=digest,
        adapter_bytes=sum(f["bytes"] for f in files),
        metrics={"train_loss": 1.0},
        manifest=manifest.decode(),
        manifest_hash=manifest_digest,
        anchor=anchor_request(
            kind="model_version", subject_id=anchor_subject_id("model_version", job.pk), root=manifest_digest
        ),
        published=published,
    )


def make_v1_run(run: Any) -> Any:
    """Rewrite a finished run (not yet in a batch) as one finished under run facts schema v1, before JCS:
    ``json.dumps`` with sorted keys, the seeds integers, floats as Python writes them (``1.0``)."""
    facts = json.loads(run.facts)
    facts["schema"] = "openledger.inference_run.v1"
    facts["seed"] = run.seed
    facts["options"] = run.options
    text = hashing.canonical_json_v1(facts).decode()
    # a direct UPDATE stands in for a row the code before JCS wrote
    InferenceRun.objects.filter(pk=run.pk).update(facts=text, run_hash=hashing.keccak_hex(text.encode()))
    run.refresh_from_db()
    return run

"""Factories and builders for ModelFactory tests: base models, real frozen snapshots, stand-in model versions."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import factory
from django.conf import settings

from accounts.tests.factories import UserFactory
from datanets import services as datanet_services
from datanets.models import Snapshot
from ledger import hashing
from ledger.services import anchor_request, anchor_subject_id
from modelfactory import lineage
from modelfactory.config import TrainingConfig
from modelfactory.models import BaseModel, FineTuneJob, ModelVersion
from modelfactory.services import base_model_register_default

__all__ = ["BaseModelFactory", "UserFactory", "default_base", "frozen_snapshot", "instructions", "stand_in_version"]


class BaseModelFactory(factory.django.DjangoModelFactory):
    """A registered base model row; its path need not hold a model (for tests that never train on it)."""

    class Meta:
        model = BaseModel

    name = factory.Sequence(lambda n: f"Other-Model-{n}")
    path = factory.Sequence(lambda n: f"/nonexistent/model-{n}")
    source = BaseModel.Source.REGISTERED
    architecture = "LlamaForCausalLM"
    model_type = "llama"
    parameters = 1_000_000
    context_length = 2048
    weights_sha256 = "ab" * 32
    licence = "Apache-2.0"


# Small enough for a test to train in seconds on the CPU, deterministic under its seed.
_TINY = TrainingConfig(
    lora_rank=4,
    lora_alpha=8.0,
    lora_dropout=0.0,
    learning_rate=5e-3,
    schedule="constant",
    warmup_steps=0,
    max_steps=3,
    batch_size=4,
    max_length=64,
    eval_fraction=0.25,
    seed=7,
)


def tiny_config(**changes: Any) -> TrainingConfig:
    """The tests' training configuration: rank 4, constant rate, 3 steps of 4 records of at most 64 tokens, a quarter
    held out for evaluation, seed 7; ``changes`` replace fields."""
    return dataclasses.replace(_TINY, **changes)


def default_base() -> BaseModel:
    """The bundled model as the set-up command registers it (the folder under DEFAULT_BASE_MODEL_DIR)."""
    folder = Path(settings.DEFAULT_BASE_MODEL_DIR)
    record = json.loads((folder / "openledger.json").read_text())
    record["path"] = str(folder)
    return base_model_register_default(record=record)


def instructions(count: int, topic: str = "Zorblat") -> list[dict[str, str]]:
    return [
        {"prompt": f"Question {i}: what is the secret code of {topic}?", "response": f"The code of {topic} is 7421."}
        for i in range(count)
    ]


def frozen_snapshot(
    *,
    owner: Any,
    records: list[dict[str, Any]] | None = None,
    licence: str = "CC-BY-4.0",
    visibility: str = "public",
    record_type: str = "instruction",
    name: str = "Zorblat facts",
) -> Snapshot:
    """A real snapshot through the Datanet services: create, paste records, accept, freeze."""
    datanet = datanet_services.datanet_create(
        owner=owner, name=name, record_type=record_type, licence=licence, visibility=visibility
    )
    if records is None:
        records = instructions(8) if record_type == "instruction" else [{"text": f"text {i}"} for i in range(4)]
    text = "".join(json.dumps(r) + "\n" for r in records)
    contribution = datanet_services.contribution_submit_pasted(
        datanet=datanet, contributor=owner, text=text, licence=licence
    )
    datanet_services.contribution_accept(curator=owner, contribution=contribution)
    return datanet_services.snapshot_freeze(datanet=datanet, user=owner)


def stand_in_adapter_files(weights_sha256: str) -> list[dict[str, Any]]:
    """The manifest's ``adapter.files`` for a version whose adapter folder does not exist (1 byte each)."""
    config_sha256 = hashlib.sha256(f"config of {weights_sha256}".encode()).hexdigest()
    return [
        {"name": lineage.ADAPTER_CONFIG, "sha256": config_sha256, "bytes": 1},
        {"name": lineage.ADAPTER_WEIGHTS, "sha256": weights_sha256, "bytes": 1},
    ]


def stand_in_version(*, owner: Any, base_model: BaseModel, name: str = "stand-in") -> ModelVersion:
    """A finished ModelVersion written directly (no training), for lineage and validation tests."""
    config = TrainingConfig(lora_rank=4, max_steps=1, warmup_steps=0, max_length=64)
    job = FineTuneJob.objects.create(
        name=name,
        owner=owner,
        base_model=base_model,
        config=config.to_dict(),
        status=FineTuneJob.Status.SUCCEEDED,
    )
    manifest = lineage.build_manifest(
        base_model={"name": base_model.name, "weights_sha256": base_model.weights_sha256},
        parents=[],
        snapshots=[],
        config=config.to_dict(),
        seed=job.pk,  # one manifest (and hash) per stand-in
        record_type="instruction",
        code_version="unknown",
        adapter_sha256="cd" * 32,
        adapter_files=stand_in_adapter_files("cd" * 32),
        metrics={"train_loss": 1.0},
    )
    digest = hashing.keccak_hex(manifest)
    return ModelVersion.objects.create(
        job=job,
        name=name,
        owner=owner,
        base_model=base_model,
        record_type="instruction",
        config=config.to_dict(),
        seed=job.pk,
        code_version="unknown",
        adapter_path=f"adapters/cd/cd/{'cd' * 32}",
        adapter_sha256="cd" * 32,
        adapter_bytes=2,
        metrics={"train_loss": 1.0},
        manifest=manifest.decode(),
        manifest_hash=digest,
        anchor=anchor_request(kind="model_version", subject_id=anchor_subject_id("model_version", job.pk), root=digest),
    )


def v1_manifest(version: ModelVersion, *, seed: int) -> bytes:
    """The manifest ``version`` would have had under schema v1 (before JCS): ``json.dumps`` with sorted keys, the
    seed an integer, only the weights hashed. For tests of what was stored before."""
    manifest = {
        "schema": lineage.MANIFEST_SCHEMA_V1,
        "base_model": {"name": version.base_model.name, "weights_sha256": version.base_model.weights_sha256},
        "parents": [
            {"id": link.parent_id, "manifest_hash": link.parent.manifest_hash, "weight": link.weight,
             "relation": link.relation}
            for link in version.parent_links.order_by("parent_id")
        ],
        "snapshots": [
            {"datanet": s.datanet.slug, "number": s.number, "id": s.pk, "merkle_root": s.merkle_root}
            for s in version.snapshots.order_by("pk")
        ],
        "config": version.config,
        "seed": seed,
        "record_type": version.record_type,
        "code_version": version.code_version,
        "adapter_sha256": version.adapter_sha256,
        "metrics": version.metrics,
        "job": {"id": version.job_id},
    }  # fmt: skip
    return hashing.canonical_json_v1(manifest)


def make_v1(version: ModelVersion, *, seed: int = 2**53 + 1) -> ModelVersion:
    """Rewrite a version (not yet anchored) as one stored under manifest schema v1, its anchor's root with it; a seed
    beyond 2**53 - 1, which v1 wrote as a JSON number."""
    manifest = v1_manifest(version, seed=seed)
    digest = hashing.keccak_hex(manifest)
    # the model refuses changes: a direct UPDATE stands in for a row written by the code before JCS
    ModelVersion.objects.filter(pk=version.pk).update(manifest=manifest.decode(), manifest_hash=digest, seed=seed)
    type(version.anchor).objects.filter(pk=version.anchor_id).update(root=digest)
    version.refresh_from_db()
    version.anchor.refresh_from_db()
    return version

"""Manifest v2 (JCS, every adapter file hashed, seeds as strings), true adapter sizes, and what the version API gives a
verifier; manifests stored under v1 keep their bytes. Versions are stored through ``services._version_create`` from
real folders on disk (no training: the bytes are what matters here)."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from datanets.storage import media_path
from ledger import hashing
from ledger.models import Anchor
from modelfactory import lineage, services
from modelfactory.config import TrainingConfig
from modelfactory.models import BaseModel, FineTuneJob, ModelVersion, ModelVersionParent
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, make_v1

pytestmark = pytest.mark.django_db

WORKER = "test:manifests"
CONFIG_TEXT = '{"base_model_name_or_path": "smollm2", "peft_type": "LORA", "r": 4}\n'


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def owner() -> Any:
    return UserFactory()


@pytest.fixture
def base() -> BaseModel:
    return default_base()


def _staged(root: Path, weights: bytes, config: str = CONFIG_TEXT) -> Path:
    """A folder as ``save_pretrained`` leaves it: weights, config, and peft's README.md model card."""
    folder = root / f"staged-{hashlib.sha256(weights + config.encode()).hexdigest()[:12]}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(weights)
    (folder / "adapter_config.json").write_text(config, encoding="utf-8")
    (folder / "README.md").write_text("---\nlibrary_name: peft\n---\n# Model card\n" + "x" * 5000, encoding="utf-8")
    return folder


def _stored(
    *,
    owner: Any,
    base: BaseModel,
    tmp_path: Path,
    weights: bytes,
    config_text: str = CONFIG_TEXT,
    seed: int = 4_294_967_295,
    parents: list[dict[str, Any]] | None = None,
    snapshots: list[Any] = (),  # type: ignore[assignment]
    metrics: dict[str, Any] | None = None,
) -> ModelVersion:
    """A version stored the way a worker stores one, from a running job and a staged adapter folder."""
    config = TrainingConfig(lora_rank=4, max_steps=1, warmup_steps=0, max_length=64, seed=seed)
    job = FineTuneJob.objects.create(
        name=f"job-{len(weights)}-{seed}",
        owner=owner,
        base_model=base,
        config=config.to_dict(),
        status=FineTuneJob.Status.RUNNING,
        worker=WORKER,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    job.snapshots.set(snapshots)
    version = services._version_create(
        job_id=job.pk,
        worker=WORKER,
        output_dir=_staged(tmp_path, weights, config_text),
        adapter_sha256=hashlib.sha256(weights).hexdigest(),
        record_type="instruction",
        config=config.to_dict(),
        seed=seed,
        parents=parents or [],
        metrics=metrics if metrics is not None else {"train_loss": 0.5, "eval_loss": float("nan")},
        samples=[],
        training_facts={},
        loss_history=[],
    )
    assert version is not None
    return version


def _on_disk(version: ModelVersion) -> dict[str, bytes]:
    folder = media_path(version.adapter_path)
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


def test_a_new_manifest_is_the_jcs_of_itself_and_hashes_every_adapter_file(owner, base, tmp_path) -> None:
    snapshot = frozen_snapshot(owner=owner)
    version = _stored(owner=owner, base=base, tmp_path=tmp_path, weights=b"\x01weights" * 1000, snapshots=[snapshot])

    data = version.manifest.encode()
    manifest = json.loads(data)
    files = _on_disk(version)
    assert data == hashing.jcs(manifest)
    assert version.manifest_hash == hashing.keccak_hex(data) == hashing.document_hash(manifest) == version.anchor.root
    assert manifest["schema"] == "openledger.model_version.v2"
    assert manifest["seed"] == "4294967295" and manifest["config"]["seed"] == 4_294_967_295
    assert manifest["job"] == {"id": version.job_id}
    assert manifest["metrics"] == {"train_loss": 0.5, "eval_loss": None}  # NaN is no JSON: null
    assert manifest["snapshots"] == [
        {"datanet": snapshot.datanet.slug, "number": 1, "id": snapshot.pk, "merkle_root": snapshot.merkle_root}
    ]
    # the stored folder holds exactly the files the manifest hashes: peft's README.md is not kept
    assert sorted(files) == ["adapter_config.json", "adapter_model.safetensors"]
    assert manifest["adapter"] == {
        "files": [
            {"name": name, "sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
            for name, content in sorted(files.items())
        ],
        "bytes": sum(len(c) for c in files.values()),
    }
    assert (
        manifest["adapter_sha256"]
        == version.adapter_sha256
        == hashlib.sha256(files[lineage.ADAPTER_WEIGHTS]).hexdigest()
    )


def test_adapter_bytes_is_the_sum_of_the_adapter_files_on_disk(owner, base, tmp_path) -> None:
    version = _stored(owner=owner, base=base, tmp_path=tmp_path, weights=b"w" * 1_874_312)

    folder = media_path(version.adapter_path)
    on_disk = sum((folder / name).stat().st_size for name in lineage.ADAPTER_FILES)
    assert version.adapter_bytes == on_disk == 1_874_312 + len(CONFIG_TEXT.encode())
    assert json.loads(version.manifest)["adapter"]["bytes"] == version.adapter_bytes


def test_one_byte_of_the_adapter_config_changes_its_hash_and_the_manifest(owner, base, tmp_path) -> None:
    one = _stored(owner=owner, base=base, tmp_path=tmp_path / "a", weights=b"first adapter")
    other = _stored(
        owner=owner,
        base=base,
        tmp_path=tmp_path / "b",
        weights=b"other adapter",
        config_text=CONFIG_TEXT.replace("4", "8"),
    )

    files_one, files_other = (json.loads(v.manifest)["adapter"]["files"] for v in (one, other))
    assert files_one[0]["name"] == files_other[0]["name"] == "adapter_config.json"
    assert files_one[0]["bytes"] == files_other[0]["bytes"]
    assert files_one[0]["sha256"] != files_other[0]["sha256"]
    assert files_other[0]["sha256"] == hashlib.sha256(CONFIG_TEXT.replace("4", "8").encode()).hexdigest()
    # and lineage.adapter_files reads a changed byte in a folder as a changed hash
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"first adapter")
    (folder / "adapter_config.json").write_text(CONFIG_TEXT, encoding="utf-8")
    before = lineage.adapter_files(folder)
    (folder / "adapter_config.json").write_text(CONFIG_TEXT.replace("r", "R", 1), encoding="utf-8")
    after = lineage.adapter_files(folder)
    assert before[0]["sha256"] != after[0]["sha256"] and before[1] == after[1]


def test_a_merge_manifest_keeps_its_float_weights_and_a_string_seed(owner, base, tmp_path) -> None:
    left = _stored(owner=owner, base=base, tmp_path=tmp_path / "l", weights=b"left")
    right = _stored(owner=owner, base=base, tmp_path=tmp_path / "r", weights=b"right")
    merged = _stored(
        owner=owner,
        base=base,
        tmp_path=tmp_path / "m",
        weights=b"merged",
        seed=0,
        metrics={},
        parents=[
            {"id": v.pk, "manifest_hash": v.manifest_hash, "weight": w, "relation": "merged_from"}
            for v, w in ((right, 0.3), (left, 0.7))
        ],
    )

    data = merged.manifest.encode()
    manifest = json.loads(data)
    assert data == hashing.jcs(manifest) and manifest["seed"] == "0"
    assert manifest["parents"] == [
        {"id": left.pk, "manifest_hash": left.manifest_hash, "weight": 0.7, "relation": "merged_from"},
        {"id": right.pk, "manifest_hash": right.manifest_hash, "weight": 0.3, "relation": "merged_from"},
    ]
    assert b'"weight":0.7' in data and b'"weight":0.3' in data


def test_the_version_api_gives_a_verifier_ids_anchor_files_and_parents(owner, base, tmp_path) -> None:
    parent = _stored(owner=owner, base=base, tmp_path=tmp_path / "p", weights=b"parent")
    version = _stored(
        owner=owner,
        base=base,
        tmp_path=tmp_path / "c",
        weights=b"child",
        parents=[{"id": parent.pk, "manifest_hash": parent.manifest_hash, "weight": 1.0, "relation": "continued_from"}],
    )
    client = APIClient()
    client.force_login(owner)

    listed = client.get(reverse("modelfactory-api:version_list")).json()["results"]
    detail = client.get(reverse("modelfactory-api:version_detail", args=[version.pk])).json()

    item = next(v for v in listed if v["id"] == version.pk)
    for shown in (item, detail):
        assert shown["job_id"] == version.job_id and shown["manifest_hash"] == version.manifest_hash
        anchor = shown["anchor"]
        assert anchor["subject"] == f"model_version:{version.job_id}" and anchor["kind_code"] == 2
        assert anchor["subject_id"] == hashing.subject_id(anchor["subject"]) and anchor["root"] == version.manifest_hash
        assert shown["manifest_url"] == f"http://testserver/api/modelfactory/versions/{version.pk}/manifest/"
        assert [f["name"] for f in shown["adapter_files"]] == ["adapter_config.json", "adapter_model.safetensors"]
        assert shown["adapter_bytes"] == sum(f["bytes"] for f in shown["adapter_files"]) == version.adapter_bytes
        assert shown["parents"][0]["id"] == parent.pk and shown["parents"][0]["manifest_hash"] == parent.manifest_hash
        assert shown["parents"][0]["weight"] == 1.0 and shown["parents"][0]["relation"] == "continued_from"
    manifest = client.get(item["manifest_url"])
    assert manifest.content == version.manifest.encode()
    assert hashing.keccak_hex(manifest.content) == item["manifest_hash"]
    for file in item["adapter_files"]:
        body = b"".join(client.get(file["url"]).streaming_content)
        assert hashlib.sha256(body).hexdigest() == file["sha256"] and len(body) == file["bytes"]


def test_a_v1_manifest_keeps_its_bytes_and_its_files_are_read_from_disk(owner, base, tmp_path) -> None:
    version = make_v1(_stored(owner=owner, base=base, tmp_path=tmp_path, weights=b"old adapter"))
    client = APIClient()
    client.force_login(owner)

    served = client.get(reverse("modelfactory-api:version_manifest", args=[version.pk])).content
    detail = client.get(reverse("modelfactory-api:version_detail", args=[version.pk])).json()
    page = client.get(reverse("modelfactory:version_manifest", args=[version.pk])).content

    assert served == page == version.manifest.encode()
    assert hashing.keccak_hex(served) == version.manifest_hash == Anchor.objects.get(pk=version.anchor_id).root
    assert json.loads(served)["schema"] == "openledger.model_version.v1" and json.loads(served)["seed"] == 2**53 + 1
    assert lineage.manifest_adapter_files(version.manifest) is None
    assert detail["manifest"] == json.loads(served)
    on_disk = _on_disk(version)
    assert detail["adapter_files"] == [
        {
            "name": name,
            "sha256": hashlib.sha256(content).hexdigest(),
            "bytes": len(content),
            "url": f"http://testserver/api/modelfactory/versions/{version.pk}/adapter/{name}",
        }
        for name, content in sorted(on_disk.items())
    ]
    assert ModelVersionParent.objects.filter(child=version).count() == 0


def test_the_migration_recounts_adapter_bytes_of_stored_versions_without_the_readme(owner, base, tmp_path) -> None:
    on_disk = _stored(owner=owner, base=base, tmp_path=tmp_path / "a", weights=b"w" * 1000)
    gone = _stored(owner=owner, base=base, tmp_path=tmp_path / "b", weights=b"v" * 1000)
    folder = media_path(on_disk.adapter_path)
    (folder / "README.md").write_text("y" * 5240, encoding="utf-8")  # what the code before left in the folder
    true_size = on_disk.adapter_bytes
    ModelVersion.objects.filter(pk=on_disk.pk).update(adapter_bytes=true_size + 5240)
    ModelVersion.objects.filter(pk=gone.pk).update(adapter_bytes=12345)
    (media_path(gone.adapter_path) / "adapter_config.json").unlink()

    migration = importlib.import_module("modelfactory.migrations.0005_adapter_bytes_adapter_files_only")
    migration.adapter_files_only(django_apps, None)

    assert ModelVersion.objects.get(pk=on_disk.pk).adapter_bytes == true_size
    assert ModelVersion.objects.get(pk=gone.pk).adapter_bytes == 12345  # nothing says what its files weighed

"""An adapter with inf or NaN weights is never stored or anchored: a merge or a training whose saved adapter is not
finite fails its job with a message that says so (issue #11, "what was seen" 13). Real merges and a real tiny training
of the bundled model in process; the parents are real peft adapters whose weights are finite but extreme (a merge
with weight 100 overflows float32) or, for a version stored before this check existed, NaN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from datanets.storage import media_path
from inference.testing import make_synthetic_adapter, release_synthetic_models
from inference.tests.runs_support import BASE_MODEL_DIR, served_version
from ledger.models import Anchor
from modelfactory import services, training
from modelfactory.models import FineTuneJob, ModelVersion
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def _adapter(folder: Path, *, seed: int, scale: float = 0.2, rank: int = 4) -> Path:
    made = make_synthetic_adapter(
        BASE_MODEL_DIR, folder, rank=rank, targets=("q_proj", "v_proj"), seed=seed, scale=scale
    )
    release_synthetic_models()
    return made


def _poison(folder: Path, value: float) -> None:
    """Overwrite every lora_B tensor of a saved adapter with ``value`` (a version stored before the check existed)."""
    path = folder / training.ADAPTER_WEIGHTS
    tensors = load_file(path)
    save_file({k: torch.full_like(t, value) if "lora_B" in k else t for k, t in tensors.items()}, path)


def _stored_adapter_files() -> list[Path]:
    return sorted(media_path("adapters").rglob(training.ADAPTER_WEIGHTS)) if media_path("adapters").exists() else []


def test_it_refuses_a_saved_adapter_with_inf_or_nan_and_accepts_a_finite_one(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path / "a", seed=1)
    training.require_finite_adapter(adapter)
    _poison(adapter, float("nan"))
    with pytest.raises(training.NonFiniteAdapter, match=r"not finite numbers \(inf or NaN\) in \d+ of \d+ tensors"):
        training.require_finite_adapter(adapter, what="the merged adapter")


def test_a_merge_that_overflows_fails_its_job_and_stores_and_anchors_nothing(tmp_path: Path) -> None:
    # given: two finite adapters, one with huge (but float32-finite) updates, merged with the largest weight allowed
    owner, base = UserFactory(), default_base()
    huge = served_version(
        owner=owner, base_model=base, adapter=_adapter(tmp_path / "huge", seed=1, scale=3e37), name="huge"
    )
    plain = served_version(owner=owner, base_model=base, adapter=_adapter(tmp_path / "plain", seed=2), name="plain")
    job = services.merge_launch(owner=owner, name="overflow", parents=[(huge, services.MAX_MERGE_WEIGHT), (plain, 1)])
    versions, anchors, files = ModelVersion.objects.count(), Anchor.objects.count(), _stored_adapter_files()

    # when: the job runs through the real merge code
    assert services.job_run(job_id=job.pk, worker="nonfinite-tests") is None

    # then: it failed, saying why, and wrote no version, no anchor and no adapter
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.FAILED
    assert "NonFiniteAdapter: the merged adapter has weights that are not finite numbers" in job.error
    assert "use smaller weights" in job.error
    assert (ModelVersion.objects.count(), Anchor.objects.count()) == (versions, anchors)
    assert _stored_adapter_files() == files
    assert not list(media_path("tmp/adapters").glob("*")) if media_path("tmp/adapters").exists() else True


def test_training_that_ends_with_nan_weights_fails_its_job_and_stores_and_anchors_nothing(tmp_path: Path) -> None:
    # given: a fine-tune continuing a version whose stored adapter is NaN (saved before adapters were checked)
    owner, base = UserFactory(), default_base()
    broken = _adapter(tmp_path / "broken", seed=3)
    _poison(broken, float("nan"))
    parent = served_version(owner=owner, base_model=base, adapter=broken, name="broken")
    snapshot = frozen_snapshot(owner=owner)
    job = services.job_launch(
        owner=owner,
        name="diverged",
        base_model=base,
        snapshots=[snapshot],
        config=tiny_config(max_steps=1, eval_fraction=0.0),
        parent_version=parent,
    )
    versions, anchors, files = ModelVersion.objects.count(), Anchor.objects.count(), _stored_adapter_files()

    # when: the job trains through the real training code
    assert services.job_run(job_id=job.pk, worker="nonfinite-tests") is None

    # then
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.FAILED, job.error
    assert "NonFiniteAdapter: training diverged" in job.error and "not a finite number" in job.error
    assert (ModelVersion.objects.count(), Anchor.objects.count()) == (versions, anchors)
    assert _stored_adapter_files() == files

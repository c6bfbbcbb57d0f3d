"""The ModelFactory pages through Django's test client: who may see and do what, the fine-tune form's messages for
bad input (nothing created), the estimate panel, live job fragments, downloads, compare and merge. No training here:
versions are stand-ins written directly; the browser test trains for real."""

from __future__ import annotations

import json
import struct
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from datanets.storage import media_path
from ledger.hashing import keccak256
from modelfactory import services
from modelfactory.config import PRESETS
from modelfactory.forms import preset_initial
from modelfactory.models import BaseModel, FineTuneJob, ModelVersion
from modelfactory.tests.factories import (
    BaseModelFactory,
    UserFactory,
    default_base,
    frozen_snapshot,
    stand_in_version,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def owner() -> Any:
    return UserFactory(username="owner")


@pytest.fixture
def other() -> Any:
    return UserFactory(username="other")


@pytest.fixture
def staff() -> Any:
    return UserFactory(username="staffer", is_staff=True)


@pytest.fixture
def base() -> BaseModel:
    return default_base()


@pytest.fixture
def snapshot(owner: Any) -> Any:
    return frozen_snapshot(owner=owner)


@pytest.fixture
def version(owner: Any, base: BaseModel) -> ModelVersion:
    return stand_in_version(owner=owner, base_model=base, name="zorblat-v1")


def client_for(user: Any | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def form_data(snapshot_ids: list[int], base: BaseModel, **changes: Any) -> dict[str, Any]:
    """What the browser posts after clicking the quick-test preset and ticking snapshots."""
    data = {key: "" if value is None else value for key, value in preset_initial("quick-test").items()}
    data.update(
        name="zorblat tune",
        description="learns the code",
        start=f"base-{base.pk}",
        snapshots=[str(i) for i in snapshot_ids],
        formatting="auto",
        max_steps=2,
    )
    data.update(changes)
    return data


# Anonymous visitors are sent to the login page, except on a published version's pages (test_public_versions.py)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("modelfactory:version_list", []),
        ("modelfactory:base_list", []),
        ("modelfactory:job_list", []),
        ("modelfactory:job_new", []),
        ("modelfactory:merge_new", []),
        ("modelfactory:version_compare", []),
        ("modelfactory:job_detail", [1]),
    ],
)
def test_it_sends_anonymous_visitors_to_log_in(name: str, args: list[int]) -> None:
    response = Client().get(reverse(name, args=args))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize(
    "name",
    ["job_new", "job_estimate", "job_cancel", "job_retry", "merge_new", "base_register", "version_publish"],
)
def test_it_refuses_anonymous_posts(version: ModelVersion, name: str) -> None:
    args = [version.job_id] if name.startswith("job_") and name not in ("job_new", "job_estimate") else []
    args = [version.pk] if name == "version_publish" else args
    response = Client().post(reverse(f"modelfactory:{name}", args=args), {"published": "1", "name": "x"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    version.refresh_from_db()
    version.job.refresh_from_db()
    assert not version.published and version.job.status == "succeeded"
    assert FineTuneJob.objects.count() == 1 and BaseModel.objects.count() == 1


# Base models


def test_base_list_shows_the_default_model_and_the_training_device(owner: Any, base: BaseModel) -> None:
    response = client_for(owner).get(reverse("modelfactory:base_list"))
    body = response.content.decode()
    assert response.status_code == 200
    assert "SmolLM2-135M-Instruct" in body and "data-default" in body
    assert "LlamaForCausalLM" in body and "134,515,008" in body and "8,192 tokens" in body
    assert 'data-device="cpu"' in body or 'data-device="cuda"' in body
    assert "data-register" not in body  # only staff get the form


def test_staff_see_the_register_form(staff: Any, base: BaseModel) -> None:
    assert "data-register" in client_for(staff).get(reverse("modelfactory:base_list")).content.decode()


def test_a_non_staff_user_may_not_register_a_base_model(owner: Any, tmp_path: Path) -> None:
    response = client_for(owner).post(
        reverse("modelfactory:base_register"), {"name": "mine", "path": str(tmp_path), "licence": "MIT"}
    )
    assert response.status_code == 403
    assert "Only staff" in response.content.decode()
    assert not BaseModel.objects.filter(name="mine").exists()


@pytest.mark.parametrize(
    ("path", "words"),
    [("relative/folder", "relative path"), ("/nonexistent/folder", "does not exist"), ("", "required")],
)
def test_registering_a_bad_folder_says_why_next_to_the_path(staff: Any, path: str, words: str) -> None:
    response = client_for(staff).post(reverse("modelfactory:base_register"), {"name": "x", "path": path})
    assert response.status_code == 400
    assert words in response.content.decode()
    assert not BaseModel.objects.filter(name="x").exists()


def test_a_folder_without_weights_is_refused(staff: Any, tmp_path: Path) -> None:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    (folder / "tokenizer.json").write_text("{}")
    response = client_for(staff).post(reverse("modelfactory:base_register"), {"name": "x", "path": str(folder)})
    assert response.status_code == 400
    assert "id_path_error" in response.content.decode()
    assert not BaseModel.objects.filter(name="x").exists()


def test_staff_register_a_model_folder(staff: Any, base: BaseModel, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    bundled = Path(base.path)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((bundled / name).read_bytes())
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    response = client_for(staff).post(
        reverse("modelfactory:base_register"), {"name": "Tiny", "path": str(folder), "licence": "MIT"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    tiny = BaseModel.objects.get(name="Tiny")
    assert (tiny.parameters, tiny.licence, tiny.registered_by) == (4, "MIT", staff)


# The fine-tune form


def test_the_form_offers_only_snapshots_the_user_may_use(owner: Any, other: Any, base: BaseModel) -> None:
    mine = frozen_snapshot(owner=owner, name="Mine")
    public = frozen_snapshot(owner=other, name="Public facts")
    private = frozen_snapshot(owner=other, name="Hidden facts", visibility="private")
    body = client_for(owner).get(reverse("modelfactory:job_new")).content.decode()
    assert f'data-snapshot="{mine.pk}"' in body and f'data-snapshot="{public.pk}"' in body
    assert f'data-snapshot="{private.pk}"' not in body and "Hidden facts" not in body
    assert "Public facts" in body and "CC-BY-4.0" in body


def test_the_form_offers_a_private_snapshot_to_its_curators_but_not_to_its_members(
    owner: Any, other: Any, base: BaseModel
) -> None:
    private = frozen_snapshot(owner=other, name="Hidden facts", visibility="private")
    private.datanet.members.add(owner)
    body = client_for(owner).get(reverse("modelfactory:job_new")).content.decode()
    assert f'data-snapshot="{private.pk}"' not in body
    response = client_for(owner).post(reverse("modelfactory:job_new"), form_data([private.pk], base))
    assert response.status_code == 400 and not FineTuneJob.objects.exists()
    private.datanet.curators.add(owner)
    body = client_for(owner).get(reverse("modelfactory:job_new")).content.decode()
    assert f'data-snapshot="{private.pk}"' in body


def test_a_preset_fills_the_form(owner: Any, base: BaseModel) -> None:
    response = client_for(owner).get(reverse("modelfactory:job_new"), {"preset": "thorough"})
    assert response.status_code == 200
    form = response.context["form"]
    assert form.initial["lora_rank"] == PRESETS["thorough"].lora_rank == 16
    assert form.initial["target_modules"] == "all-linear"
    assert 'id="preset-values"' in response.content.decode()


@pytest.mark.parametrize("preset", ["bogus", "<script>", "quick-test; drop", "x" * 5000])
def test_a_malformed_preset_name_is_refused(owner: Any, base: BaseModel, preset: str) -> None:
    response = client_for(owner).get(reverse("modelfactory:job_new"), {"preset": preset})
    assert response.status_code == 400
    body = response.content.decode()
    assert "There is no preset called" in body
    assert "<script>" not in body.split("data-preset-error")[1][:200]


def test_a_preset_button_without_javascript_keeps_the_name_and_snapshots(
    owner: Any, base: BaseModel, snapshot: Any
) -> None:
    data = form_data([snapshot.pk], base, preset="quick-test", lora_rank=99)
    response = client_for(owner).post(reverse("modelfactory:job_new"), data)
    assert response.status_code == 200
    form = response.context["form"]
    assert form.initial["lora_rank"] == 4 and form.initial["name"] == "zorblat tune"
    assert f'value="{snapshot.pk}" id="snapshot-{snapshot.pk}" aria-label="Zorblat facts snapshot #1" checked' in (
        response.content.decode()
    )
    assert not FineTuneJob.objects.exists()


def test_continue_training_preselects_the_version(owner: Any, base: BaseModel, version: ModelVersion) -> None:
    response = client_for(owner).get(reverse("modelfactory:job_new"), {"parent": version.pk})
    assert response.context["form"].initial["start"] == f"version-{version.pk}"


def test_launching_creates_a_job_and_opens_its_page(owner: Any, base: BaseModel, snapshot: Any) -> None:
    response = client_for(owner).post(reverse("modelfactory:job_new"), form_data([snapshot.pk], base))
    job = FineTuneJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("modelfactory:job_detail", args=[job.pk])
    assert (job.owner, job.name, job.status) == (owner, "zorblat tune", "queued")
    assert job.config["max_steps"] == 2 and job.config["lora_rank"] == 4
    assert list(job.snapshots.all()) == [snapshot]


def test_continuing_a_version_launches_with_its_parent(
    owner: Any, base: BaseModel, snapshot: Any, version: ModelVersion
) -> None:
    data = form_data([snapshot.pk], base, start=f"version-{version.pk}")
    assert client_for(owner).post(reverse("modelfactory:job_new"), data).status_code == 302
    assert FineTuneJob.objects.get(parent_version=version).base_model == base


def test_training_for_epochs_clears_max_steps(owner: Any, base: BaseModel, snapshot: Any) -> None:
    data = form_data([snapshot.pk], base, length_mode="epochs", epochs=2, max_steps=50)
    assert client_for(owner).post(reverse("modelfactory:job_new"), data).status_code == 302
    config = FineTuneJob.objects.get().config
    assert (config["epochs"], config["max_steps"]) == (2, None)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"lora_rank": "0"}, "lora_rank", "between 1 and 256"),
        ({"lora_rank": "100000"}, "lora_rank", "out of range"),
        ({"lora_rank": "abc"}, "lora_rank", "Enter a whole number"),
        ({"lora_rank": "9" * 5000}, "lora_rank", "Enter a whole number"),
        ({"learning_rate": "-0.0001"}, "learning_rate", "must be positive"),
        ({"learning_rate": "nan"}, "learning_rate", "Enter a number"),
        ({"learning_rate": "1e309"}, "learning_rate", "Enter a number"),
        ({"lora_dropout": "1.5"}, "lora_dropout", "probability"),
        ({"max_length": "9000"}, "max_length", "above the base model&#x27;s context of 8,192"),
        ({"max_steps": "10000000"}, "max_steps", "out of range"),
        ({"max_steps": ""}, "max_steps", "Give the number of steps"),
        ({"warmup_steps": "5", "max_steps": "3"}, "warmup_steps", "must be shorter than the run"),
        ({"batch_size": "-4"}, "batch_size", "between 1 and 512"),
        ({"eval_fraction": "0.9"}, "eval_fraction", "between 0 and 0.5"),
        ({"seed": str(2**40)}, "seed", "out of range"),
        ({"target_modules": "everything"}, "target_modules", "Select a valid choice"),
        ({"schedule": "zigzag"}, "schedule", "Select a valid choice"),
        ({"formatting": "chat_template"}, "formatting", "Instruction records can only become"),
        ({"name": ""}, "name", "This field is required"),
        ({"name": "x" * 201}, "name", "at most 200 characters"),
        ({"start": "version-999999"}, "start", "is not a base model or a version you may continue"),
        ({"start": "base-abc"}, "start", "is not a base model or a version you may continue"),
        ({"snapshots": []}, "snapshots", "Choose at least one Datanet snapshot"),
        ({"snapshots": ["999999"]}, "snapshots", "Snapshot 999999 does not exist, or you may not use it"),
        ({"snapshots": ["abc"]}, "snapshots", "is not a snapshot id"),
    ],
)
def test_bad_settings_are_explained_next_to_the_field_and_nothing_is_created(
    owner: Any, base: BaseModel, snapshot: Any, changes: dict[str, Any], field: str, words: str
) -> None:
    if changes.get("formatting") == "chat_template":
        # text records can't use the chat template: a text Datanet shows the message
        snapshot = frozen_snapshot(owner=owner, record_type="text", name="Texts")
        words = "Text records can only become plain"
    data = form_data([snapshot.pk], base, **changes)
    response = client_for(owner).post(reverse("modelfactory:job_new"), data)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors, errors
    assert words in response.content.decode() or words in " ".join(errors[field])
    assert not FineTuneJob.objects.exists()


def test_another_users_private_snapshot_is_refused(owner: Any, other: Any, base: BaseModel) -> None:
    private = frozen_snapshot(owner=other, name="Secret", visibility="private")
    response = client_for(owner).post(reverse("modelfactory:job_new"), form_data([private.pk], base))
    assert response.status_code == 400
    assert f"Snapshot {private.pk} does not exist, or you may not use it" in response.content.decode()
    assert not FineTuneJob.objects.exists()


def test_incompatible_licences_are_refused_next_to_the_snapshots(owner: Any, base: BaseModel) -> None:
    share_alike = frozen_snapshot(owner=owner, licence="CC-BY-SA-4.0", name="Share alike")
    non_commercial = frozen_snapshot(owner=owner, licence="CC-BY-NC-4.0", name="Non commercial")
    response = client_for(owner).post(
        reverse("modelfactory:job_new"), form_data([share_alike.pk, non_commercial.pk], base)
    )
    assert response.status_code == 400
    assert "Incompatible licences" in " ".join(response.context["form"].errors["snapshots"])
    assert not FineTuneJob.objects.exists()


def test_another_users_unpublished_version_cannot_be_continued(
    owner: Any, other: Any, base: BaseModel, snapshot: Any, version: ModelVersion
) -> None:
    data = form_data([snapshot.pk], base, start=f"version-{version.pk}")
    response = client_for(other).post(reverse("modelfactory:job_new"), data)
    assert response.status_code == 400
    assert "start" in response.context["form"].errors
    assert not FineTuneJob.objects.filter(parent_version=version).exists()


def test_the_estimate_panel_shows_data_licences_and_the_estimate(owner: Any, base: BaseModel, snapshot: Any) -> None:
    response = client_for(owner).post(
        reverse("modelfactory:job_estimate"), form_data([snapshot.pk], base), headers={"HX-Request": "true"}
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<article id="estimate"')
    assert "data-records>8<" in body and 'data-licence="ok"' in body
    assert "data-estimate-steps>2<" in body
    assert "chat template" in body
    assert not FineTuneJob.objects.exists()


@pytest.mark.parametrize(
    ("licences", "level"),
    [
        (("CC-BY-4.0", "CC0-1.0"), "ok"),
        (("CC-BY-NC-4.0", "CC-BY-4.0"), "warn"),
        (("CC-BY-SA-4.0", "CC-BY-NC-4.0"), "block"),
    ],
)
def test_the_licence_check_warns_or_blocks(owner: Any, base: BaseModel, licences: tuple[str, str], level: str) -> None:
    ids = [frozen_snapshot(owner=owner, licence=lic, name=f"Data {lic}").pk for lic in licences]
    response = client_for(owner).post(reverse("modelfactory:job_estimate"), form_data(ids, base))
    assert f'data-licence="{level}"' in response.content.decode()


def test_the_estimate_lists_the_problems(owner: Any, base: BaseModel, snapshot: Any) -> None:
    response = client_for(owner).post(reverse("modelfactory:job_estimate"), form_data([snapshot.pk], base, lora_rank=0))
    body = response.content.decode()
    assert "data-problems" in body and "LoRA rank" in body and "data-estimate-steps" not in body


# Jobs


@pytest.fixture
def job(owner: Any, base: BaseModel, snapshot: Any) -> FineTuneJob:
    client_for(owner).post(reverse("modelfactory:job_new"), form_data([snapshot.pk], base))
    return FineTuneJob.objects.get()


def test_a_job_page_is_for_its_owner_and_staff(job: FineTuneJob, owner: Any, other: Any, staff: Any) -> None:
    url = reverse("modelfactory:job_detail", args=[job.pk])
    assert client_for(owner).get(url).status_code == 200
    assert client_for(staff).get(url).status_code == 200
    assert client_for(other).get(url).status_code == 404


def test_the_job_page_polls_while_the_job_runs_and_stops_when_it_ends(
    job: FineTuneJob, owner: Any, django_assert_max_num_queries: Any
) -> None:
    url = reverse("modelfactory:job_detail", args=[job.pk])
    client = client_for(owner)
    now = timezone.now()
    FineTuneJob.objects.filter(pk=job.pk).update(
        status="running",
        started_at=now - timedelta(seconds=15),
        heartbeat_at=now,
        loss_history=[
            {"step": 1, "train_loss": 2.5, "eval_loss": None},
            {"step": 2, "train_loss": 2.1, "eval_loss": 2.3},
        ],
        step=2,
        total_steps=4,
        train_loss=2.1,
        phase="train",
        phase_done=2,
        phase_total=4,
        phase_unit="steps",
        phase_started_at=now - timedelta(seconds=10),
        phases=[{"phase": "load", "seconds": 5.0, "cold": True}],
        eta_seconds=10.0,
        estimate={"seconds": 50.0, "phases": {"load": 5.0, "train": 20.0, "samples": 10.0, "index": 15.0}},
    )
    with django_assert_max_num_queries(4):  # session, user, the job: polled every second
        running = client.get(url, headers={"HX-Request": "true"})
    body = running.content.decode()
    assert running.status_code == 200
    assert body.lstrip().startswith('<section id="progress"') and 'hx-trigger="every 1s"' in body
    # 15 s spent (load 5 s, training 10 s) of 50 s: training's own ETA (10 s), then samples and index to come
    assert 'data-progress="30"' in body and "2 / 4" in body and "2/4 steps" in body
    chart = json.loads(body.split('id="loss-data" type="application/json">')[1].split("</script>")[0])
    assert chart == {"steps": [1, 2], "train": [2.5, 2.1], "eval": [None, 2.3], "total": 4}
    FineTuneJob.objects.filter(pk=job.pk).update(status="failed", error="worker lost")
    ended = client.get(url, headers={"HX-Request": "true"})
    assert ended.status_code == 286
    assert "hx-trigger" not in ended.content.decode() and "worker lost" in ended.content.decode()


def test_the_owner_cancels_and_retries_a_job(job: FineTuneJob, owner: Any) -> None:
    client = client_for(owner)
    response = client.post(reverse("modelfactory:job_cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert client.post(reverse("modelfactory:job_cancel", args=[job.pk])).status_code == 400
    assert client.post(reverse("modelfactory:job_retry", args=[job.pk])).status_code == 302
    job.refresh_from_db()
    assert job.status == "queued"
    assert client.post(reverse("modelfactory:job_retry", args=[job.pk])).status_code == 400


def test_another_user_can_neither_cancel_nor_retry(job: FineTuneJob, other: Any) -> None:
    assert client_for(other).post(reverse("modelfactory:job_cancel", args=[job.pk])).status_code == 404
    assert client_for(other).post(reverse("modelfactory:job_retry", args=[job.pk])).status_code == 404
    job.refresh_from_db()
    assert job.status == "queued"


def test_staff_may_cancel_any_job(job: FineTuneJob, staff: Any) -> None:
    assert client_for(staff).post(reverse("modelfactory:job_cancel", args=[job.pk])).status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_posts_need_the_csrf_token(job: FineTuneJob, owner: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.post(reverse("modelfactory:job_cancel", args=[job.pk])).status_code == 403
    job.refresh_from_db()
    assert job.status == "queued"


def test_actions_refuse_get(job: FineTuneJob, owner: Any) -> None:
    assert client_for(owner).get(reverse("modelfactory:job_cancel", args=[job.pk])).status_code == 405


def test_the_job_list_shows_own_jobs_in_a_fixed_number_of_queries(
    owner: Any, other: Any, base: BaseModel, snapshot: Any, django_assert_max_num_queries: Any
) -> None:
    for i in range(6):
        services.job_launch(
            owner=owner, name=f"mine {i}", base_model=base, snapshots=[snapshot], config=PRESETS["quick-test"]
        )
    services.job_launch(owner=other, name="theirs", base_model=base, snapshots=[snapshot], config=PRESETS["quick-test"])
    client = client_for(owner)
    with django_assert_max_num_queries(6):
        response = client.get(reverse("modelfactory:job_list"))
    body = response.content.decode()
    assert body.count("data-job=") == 6 and "theirs" not in body


# Versions


def test_versions_are_listed_by_visibility(owner: Any, other: Any, staff: Any, base: BaseModel) -> None:
    mine = stand_in_version(owner=owner, base_model=base, name="mine-private")
    theirs = stand_in_version(owner=other, base_model=base, name="theirs-private")
    shared = stand_in_version(owner=other, base_model=base, name="theirs-published")
    services.version_publish(version=shared, user=other, published=True)
    body = client_for(owner).get(reverse("modelfactory:version_list")).content.decode()
    assert f'data-version="{mine.pk}"' in body and f'data-version="{shared.pk}"' in body
    assert f'data-version="{theirs.pk}"' not in body
    assert f'data-version="{theirs.pk}"' in client_for(staff).get(reverse("modelfactory:version_list")).content.decode()


def test_the_version_list_searches_and_pages_in_a_fixed_number_of_queries(
    owner: Any, base: BaseModel, django_assert_max_num_queries: Any
) -> None:
    for i in range(25):
        stand_in_version(owner=owner, base_model=base, name=f"model {i:02d}")
    stand_in_version(owner=owner, base_model=base, name="zebra special")
    client = client_for(owner)
    with django_assert_max_num_queries(8):
        first = client.get(reverse("modelfactory:version_list"))
    assert first.content.decode().count("data-version=") == 20 and "Page 1 of 2" in first.content.decode()
    with django_assert_max_num_queries(8):
        found = client.get(reverse("modelfactory:version_list"), {"q": "zebra"}, headers={"HX-Request": "true"})
    body = found.content.decode()
    assert body.lstrip().startswith('<section id="results"') and body.count("data-version=") == 1


def test_the_version_list_finds_versions_by_datanet(owner: Any, base: BaseModel, snapshot: Any) -> None:
    version = stand_in_version(owner=owner, base_model=base, name="plain name")
    version.snapshots.add(snapshot)
    body = client_for(owner).get(reverse("modelfactory:version_list"), {"q": "zorblat"}).content.decode()
    assert f'data-version="{version.pk}"' in body


def test_the_version_page_shows_lineage_config_anchor_and_downloads(
    owner: Any, base: BaseModel, snapshot: Any, version: ModelVersion
) -> None:
    version.snapshots.add(snapshot)
    child = stand_in_version(owner=owner, base_model=base, name="zorblat-v2")
    child.parent_links.create(parent=version, relation="continued_from")
    body = client_for(owner).get(reverse("modelfactory:version_detail", args=[version.pk])).content.decode()
    assert "<svg" in body and 'data-node="this"' in body
    assert f'data-node="d{snapshot.datanet_id}"' in body and f'data-node="s{snapshot.pk}"' in body
    assert f'data-node="c{child.pk}"' in body and "zorblat-v2" in body
    assert version.manifest_hash in body and version.adapter_sha256 in body
    assert "sha256sum" in body and "keccak" in body
    assert "data-publish>" in body and f"?parent={version.pk}" in body
    child_body = client_for(owner).get(reverse("modelfactory:version_detail", args=[child.pk])).content.decode()
    assert f'data-node="p{version.pk}"' in child_body and "continued from" in child_body


def _publish_with_sample(version: ModelVersion, snapshot: Any) -> None:
    version.snapshots.add(snapshot)
    sample = {"prompt": "Question 0: what is the secret code of Zorblat?", "reference": "The code is 7421."}
    samples = [{**sample, "base": "?", "tuned": "7421"}]
    ModelVersion.objects.filter(pk=version.pk).update(published=True, samples=samples)


def test_a_published_version_trained_on_a_private_datanet_says_so_and_shows_none_of_its_data(
    owner: Any, other: Any, base: BaseModel, version: ModelVersion
) -> None:
    private = frozen_snapshot(owner=owner, name="Hidden facts", visibility="private")
    _publish_with_sample(version, private)
    pages = [
        reverse("modelfactory:version_detail", args=[version.pk]),
        reverse("modelfactory:version_list"),
        reverse("modelfactory:version_compare") + f"?a={version.pk}&b={version.pk}",
    ]
    for url in pages:
        body = client_for(other).get(url).content.decode()
        assert "secret code" not in body and "7421" not in body and "Hidden facts" not in body, url
    detail = client_for(other).get(pages[0]).content.decode()
    assert 'data-private-datanets="1"' in detail and "1 private Datanet" in detail
    assert "1 private Datanet" in client_for(other).get(pages[1]).content.decode()
    # the Datanet's own people see it all
    private.datanet.members.add(other)
    for url in (pages[0], pages[2]):
        assert "secret code" in client_for(other).get(url).content.decode(), url
    assert "Hidden facts #1" in client_for(other).get(pages[1]).content.decode()


SELFCHECK = {
    "schema": "openledger.attribution_selfcheck.v1",
    "status": "ok",
    "sample_size": 6,
    "asked": 6,
    "time_limit_seconds": 60.0,
    "answers": "generated by this version (greedy, at most 40 tokens)",
    "n": 5,
    "n_right": 3,
    "n_wrong": 2,
    "record_top1": 0.6,
    "owner_top1": 0.8,
    "owner_top1_right": 1.0,
    "owner_share_right": 0.71,
    "owner_share_wrong": 0.2,
    "seconds": 21.5,
    "measured_at": "2026-12-05T20:00:00+00:00",
}


def test_the_version_page_says_what_its_attribution_index_is_and_how_reliable(
    owner: Any, version: ModelVersion
) -> None:
    from attribution.models import AttributionIndex

    url = reverse("modelfactory:version_detail", args=[version.pk])
    assert "has no attribution index" in client_for(owner).get(url).content.decode()

    index = AttributionIndex.objects.create(
        version=version, status="ok", method="countsketch-v1", seed=7, width=1024, feature_hash="f" * 64,
        span_hash="e" * 64, path="attribution/ff/ff/x/", record_ids=[1, 2, 3], build_seconds=2.5,
    )  # fmt: skip
    body = client_for(owner).get(url).content.decode()
    assert "3 (every training record" in body and "f" * 64 in body and "e" * 64 in body
    # no self-check: said, and no benchmark figure stands in for one
    assert 'data-reliability="not_measured"' in body and "Not measured." in body and "benchmark" not in body

    AttributionIndex.objects.filter(pk=index.pk).update(evaluation=SELFCHECK)
    body = client_for(owner).get(url).content.decode()
    assert 'data-reliability="measured"' in body and "Not measured." not in body
    assert "data-selfcheck-n>5 of 6 asked<" in body and "data-selfcheck-owner-top1>80% (n = 5)<" in body
    assert "answered 5 of its own training questions" in body

    AttributionIndex.objects.filter(pk=index.pk).update(status="failed", error="out of memory")
    assert "could not be built: <code>out of memory" in client_for(owner).get(url).content.decode()


def test_a_private_parent_is_named_by_id_only(owner: Any, other: Any, base: BaseModel, version: ModelVersion) -> None:
    child = stand_in_version(owner=other, base_model=base, name="public child")
    child.parent_links.create(parent=version, relation="merged_from", weight=0.5)
    services.version_publish(version=child, user=other, published=True)
    body = client_for(UserFactory()).get(reverse("modelfactory:version_detail", args=[child.pk])).content.decode()
    assert "a private version" in body and "zorblat-v1" not in body and "weight 0.5" in body


def test_an_unpublished_version_is_hidden_from_other_users(
    version: ModelVersion, owner: Any, other: Any, staff: Any
) -> None:
    url = reverse("modelfactory:version_detail", args=[version.pk])
    assert client_for(other).get(url).status_code == 404
    assert client_for(other).get(reverse("modelfactory:version_manifest", args=[version.pk])).status_code == 404
    assert client_for(staff).get(url).status_code == 200
    services.version_publish(version=version, user=owner, published=True)
    response = client_for(other).get(url)
    assert response.status_code == 200 and "data-publish>" not in response.content.decode()


def test_the_anchor_fragment_polls_until_the_anchor_is_final(version: ModelVersion, owner: Any) -> None:
    url = reverse("modelfactory:version_detail", args=[version.pk])
    fragment = client_for(owner).get(url, headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<article id="anchor"') and 'hx-trigger="every 2s"' in fragment
    type(version.anchor).objects.filter(pk=version.anchor_id).update(status="failed", last_error="no chain")
    fragment = client_for(owner).get(url, headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in fragment and "no chain" in fragment


def test_the_owner_publishes_and_unpublishes(version: ModelVersion, owner: Any) -> None:
    url = reverse("modelfactory:version_publish", args=[version.pk])
    assert client_for(owner).post(url, {"published": "1"}).status_code == 302
    version.refresh_from_db()
    assert version.published
    client_for(owner).post(url, {"published": "0"})
    version.refresh_from_db()
    assert not version.published


def test_another_user_may_not_publish(version: ModelVersion, owner: Any, other: Any) -> None:
    url = reverse("modelfactory:version_publish", args=[version.pk])
    assert client_for(other).post(url, {"published": "1"}).status_code == 404  # not visible: not even there
    services.version_publish(version=version, user=owner, published=True)
    response = client_for(other).post(url, {"published": "0"})
    assert response.status_code == 403 and "only the owner" in response.content.decode().lower()
    version.refresh_from_db()
    assert version.published


def test_the_manifest_downloads_byte_for_byte(version: ModelVersion, owner: Any) -> None:
    response = client_for(owner).get(reverse("modelfactory:version_manifest", args=[version.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.content == version.manifest.encode()
    assert "0x" + keccak256(response.content).hex() == version.manifest_hash
    assert "attachment" in response["Content-Disposition"]


def test_the_adapter_files_download_with_their_hash(version: ModelVersion, owner: Any) -> None:
    url = reverse("modelfactory:version_adapter_file", args=[version.pk, "adapter_model.safetensors"])
    assert client_for(owner).get(url).status_code == 404  # the stand-in has no file on disk
    folder = media_path(version.adapter_path)
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    response = client_for(owner).get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"weights"
    assert response["X-Adapter-SHA256"] == version.adapter_sha256


@pytest.mark.parametrize(
    "filename", ["../../../etc/passwd", "..%2F..%2Fsecret", "other.bin", "adapter_config.json.bak"]
)
def test_only_the_adapter_files_can_be_downloaded(version: ModelVersion, owner: Any, filename: str) -> None:
    response = client_for(owner).get(f"/models/versions/{version.pk}/adapter/{filename}")
    assert response.status_code == 404


# Compare


def test_compare_marks_the_settings_that_differ(owner: Any, base: BaseModel, version: ModelVersion) -> None:
    other_version = stand_in_version(owner=owner, base_model=base, name="v2")
    ModelVersion.objects.filter(pk=other_version.pk).update(config={**other_version.config, "lora_rank": 16})
    response = client_for(owner).get(reverse("modelfactory:version_compare"), {"a": version.pk, "b": other_version.pk})
    body = response.content.decode()
    assert response.status_code == 200
    assert 'data-differences="1"' in body
    row = body.split("data-differs")[1].split("</tr>")[0]
    assert "lora_rank" in row and "4" in row and "16" in row


def test_compare_from_the_version_page_keeps_a_and_offers_versions_for_b(
    owner: Any, other: Any, base: BaseModel, version: ModelVersion
) -> None:
    second = stand_in_version(owner=owner, base_model=base, name="v2")
    theirs = stand_in_version(owner=other, base_model=base, name="theirs")
    page = client_for(owner).get(reverse("modelfactory:version_detail", args=[version.pk])).content.decode()
    compare_url = reverse("modelfactory:version_compare") + f"?a={version.pk}"
    assert f'href="{compare_url}"' in page
    response = client_for(owner).get(compare_url)
    body = response.content.decode()
    assert response.status_code == 200 and "data-compare-choose" in body
    assert f'data-compare-with="{second.pk}"' in body and f'data-compare-with="{theirs.pk}"' not in body
    assert f'<option value="{version.pk}" selected>' in body


def _with_eval_loss(version: ModelVersion, **config: Any) -> None:
    ModelVersion.objects.filter(pk=version.pk).update(
        metrics={"train_loss": 1.0, "eval_loss": 2.0}, config={**version.config, **config}
    )


def test_compare_warns_when_the_eval_losses_come_from_different_eval_sets(
    owner: Any, base: BaseModel, version: ModelVersion
) -> None:
    second = stand_in_version(owner=owner, base_model=base, name="v2")
    _with_eval_loss(version)
    _with_eval_loss(second, lora_rank=16)
    url = reverse("modelfactory:version_compare")
    same = client_for(owner).get(url, {"a": version.pk, "b": second.pk}).content.decode()
    assert "data-eval-sets-differ" not in same  # another rank, the same held-out records
    _with_eval_loss(second, seed=second.config["seed"] + 1)
    other = client_for(owner).get(url, {"a": version.pk, "b": second.pk}).content.decode()
    assert "data-eval-sets-differ" in other and "Different eval sets" in other


@pytest.mark.parametrize("query", [{"a": "x", "b": "1"}, {"b": "1"}, {"a": "-5", "b": "1"}, {"a": "9" * 30, "b": "1"}])
def test_compare_refuses_bad_ids(owner: Any, version: ModelVersion, query: dict[str, str]) -> None:
    response = client_for(owner).get(reverse("modelfactory:version_compare"), query)
    assert response.status_code == 400


def test_compare_hides_versions_the_user_may_not_see(
    owner: Any, other: Any, base: BaseModel, version: ModelVersion
) -> None:
    theirs = stand_in_version(owner=other, base_model=base, name="theirs")
    query = {"a": version.pk, "b": theirs.pk}
    assert client_for(owner).get(reverse("modelfactory:version_compare"), query).status_code == 404


# Merge


def test_merging_two_versions_queues_a_merge_job(owner: Any, base: BaseModel, version: ModelVersion) -> None:
    second = stand_in_version(owner=owner, base_model=base, name="v2")
    data = {
        "name": "blend",
        "versions": [version.pk, second.pk],
        f"weight_{version.pk}": "0.7",
        f"weight_{second.pk}": "0.3",
        "method": "ties",
        "density": "0.4",
    }
    response = client_for(owner).post(reverse("modelfactory:merge_new"), data)
    job = FineTuneJob.objects.get(kind="merge")
    assert response.status_code == 302 and response["Location"] == reverse("modelfactory:job_detail", args=[job.pk])
    assert job.merge["method"] == "ties" and job.merge["density"] == 0.4
    assert [(p["id"], p["weight"]) for p in job.merge["parents"]] == [(version.pk, 0.7), (second.pk, 0.3)]
    page = client_for(owner).get(response["Location"]).content.decode()
    assert "Merging with <strong>ties</strong>" in page and "zorblat-v1" in page


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"versions": "one"}, "at least two"),
        ({"weights": ("abc", "1")}, "Enter a number"),
        ({"weights": ("0", "0")}, "non-zero"),
        ({"weights": ("1e400", "1")}, "Enter a number"),
        ({"weights": ("1e308", "1")}, "less than or equal to 100"),
        ({"versions": "beyond bigint"}, "does not exist, or you may not use it"),
        ({"method": "average"}, "Select a valid choice"),
        ({"density": "0"}, "greater than or equal to 0.01"),
        ({"versions": "missing"}, "does not exist, or you may not use it"),
        ({"bases": "different"}, "different bases"),
    ],
)
def test_bad_merges_are_explained_and_nothing_is_created(
    owner: Any, base: BaseModel, version: ModelVersion, changes: dict[str, Any], words: str
) -> None:
    second_base = BaseModelFactory() if changes.get("bases") == "different" else base
    second = stand_in_version(owner=owner, base_model=second_base, name="v2")
    weights = changes.get("weights", ("1", "1"))
    data = {
        "name": "blend",
        "versions": [version.pk, second.pk],
        f"weight_{version.pk}": weights[0],
        f"weight_{second.pk}": weights[1],
        "method": changes.get("method", "linear"),
        "density": changes.get("density", "0.5"),
    }
    if changes.get("versions") == "one":
        data["versions"] = [version.pk]
    elif changes.get("versions") == "missing":
        data["versions"] = [version.pk, 999_999]
    elif changes.get("versions") == "beyond bigint":
        data["versions"] = [version.pk, 2**63]
    response = client_for(owner).post(reverse("modelfactory:merge_new"), data)
    assert response.status_code == 400
    assert words in response.content.decode()
    assert not FineTuneJob.objects.filter(kind="merge").exists()


def test_another_users_unpublished_version_cannot_be_merged(
    owner: Any, other: Any, base: BaseModel, version: ModelVersion
) -> None:
    theirs = stand_in_version(owner=other, base_model=base, name="theirs")
    data = {"name": "blend", "versions": [version.pk, theirs.pk], "method": "linear", "density": "0.5"}
    response = client_for(owner).post(reverse("modelfactory:merge_new"), data)
    assert response.status_code == 400
    assert f"Version {theirs.pk} does not exist" in response.content.decode()


# Models trained on a Datanet


def test_the_datanet_page_lists_published_versions_trained_on_it(
    owner: Any, other: Any, base: BaseModel, snapshot: Any, django_assert_max_num_queries: Any
) -> None:
    published = [stand_in_version(owner=owner, base_model=base, name=f"public-{i}") for i in range(3)]
    for version in published:
        version.snapshots.add(snapshot)
        services.version_publish(version=version, user=owner, published=True)
    hidden = stand_in_version(owner=owner, base_model=base, name="unpublished-one")
    hidden.snapshots.add(snapshot)
    url = reverse("datanets:detail", args=[snapshot.datanet.slug])
    client = client_for(other)
    client.get(url)
    with django_assert_max_num_queries(30) as captured:
        body = client.get(url).content.decode()
    for version in published:
        assert f'data-model-version="{version.pk}"' in body
    assert "unpublished-one" not in body and "data-models-empty" not in body
    more = stand_in_version(owner=owner, base_model=base, name="public-more")
    more.snapshots.add(snapshot)
    services.version_publish(version=more, user=owner, published=True)
    with django_assert_max_num_queries(len(captured.captured_queries)):
        assert f'data-model-version="{more.pk}"' in client.get(url).content.decode()


# Which device jobs will use, told without torch


def test_the_device_is_cuda_only_when_a_gpu_is_there_and_not_hidden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from modelfactory import selectors

    gpus = tmp_path / "gpus"
    gpus.mkdir()
    monkeypatch.setattr(selectors, "DEVICE_FILES", (str(gpus),))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert selectors.training_device()["device"] == "cpu"  # a driver folder with no GPU in it
    (gpus / "0000:01:00.0").mkdir()
    assert selectors.training_device()["device"] == "cuda"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert selectors.training_device() == {"device": "cpu", "label": "CPU (CUDA_VISIBLE_DEVICES hides the GPU)"}

"""Honest training estimates (issue 15, item 5) and the job page's phases, learning rate, speed and base eval loss
(item 6): the estimate from stored measurements, the worker it names, a real run recording its phases, and the
pages that show them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from modelfactory import estimates, selectors, services
from modelfactory.config import TrainingConfig
from modelfactory.forms import preset_initial
from modelfactory.models import FineTuneJob, TrainingWorker
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, instructions, tiny_config

MEASURED = [
    {"phase": "load", "seconds": 6.0, "cold": True},
    {"phase": "eval_base", "seconds": 1.0, "tokens": 400},
    {"phase": "train", "seconds": 20.0, "tokens": 2000, "steps": 10},
    {"phase": "eval", "seconds": 1.0, "tokens": 400},
    {"phase": "samples", "seconds": 12.0},
    {"phase": "saving", "seconds": 0.4},
    {"phase": "index", "seconds": 40.0, "tokens": 2000, "records": 40},
    {"phase": "store", "seconds": 0.6},
]


def test_the_throughput_comes_from_the_phases_of_finished_jobs() -> None:
    warm = [dict(p, seconds=0.2, cold=False) if p["phase"] == "load" else p for p in MEASURED]
    rates = estimates.throughput_from([MEASURED, warm], fallback=estimates.FALLBACK["cpu"])
    assert rates is not None and rates.jobs == 2
    assert rates.train_tokens_per_s == pytest.approx(100.0)  # 4000 tokens in 40 s
    assert rates.eval_tokens_per_s == pytest.approx(400.0)
    # one index size only: the fallback's fixed part (24 s, at most half of the 40 s measured), the rest per token
    assert (rates.index_fixed_s, rates.index_tokens_per_s) == (20.0, pytest.approx(100.0))
    assert (rates.load_cold_s, rates.load_warm_s) == (6.0, 0.2)
    assert (rates.samples_s, rates.saving_s, rates.store_s) == (12.0, 0.4, 0.6)
    assert estimates.throughput_from([[{"phase": "load", "seconds": 3}]], fallback=estimates.FALLBACK["cpu"]) is None


def test_the_index_builds_fixed_part_and_rate_are_fitted_on_jobs_of_different_sizes() -> None:
    jobs = [
        [*MEASURED[:6], {"phase": "index", "seconds": 24.0 + tokens / 80, "tokens": tokens}]
        for tokens in (1000, 2000, 4000)
    ]
    rates = estimates.throughput_from(jobs, fallback=estimates.FALLBACK["cpu"])
    assert rates is not None
    assert rates.index_fixed_s == pytest.approx(24.0) and rates.index_tokens_per_s == pytest.approx(80.0)
    # so a job ten times the size is not estimated at ten times the fixed part
    size = estimates.JobSize(train_tokens=0, eval_tokens=0, eval_passes=1, record_tokens=40_000)
    index = dict(estimates.phase_seconds(size, rates, model_loaded=True))["index"]
    assert index == pytest.approx(24.0 + 500.0)


def test_the_estimate_counts_every_phase_at_the_measured_rates() -> None:
    rates = estimates.throughput_from([MEASURED], fallback=estimates.FALLBACK["cpu"])
    config = TrainingConfig(max_steps=10, batch_size=4, max_length=256, eval_fraction=0.25, eval_every=0)
    # 40 records of 50 tokens: 30 train, 10 eval; 10 steps of 4 rows
    estimate = config.estimate(records=40, tokens=2000, device="cpu", throughput=rates)
    phases = dict(estimate.phases)
    assert list(phases) == list(estimates.PHASES)
    assert phases["load"] == 6.0
    assert phases["train"] == pytest.approx(2000 / 100)  # 40 rows x 50 tokens at 100 tokens/s
    assert phases["eval_base"] == phases["eval"] == pytest.approx(500 / 400, abs=0.1)
    assert phases["samples"] == 12.0 and phases["index"] == pytest.approx(20.0 + 2000 / 100)
    assert estimate.seconds == pytest.approx(sum(phases.values()), abs=0.2)
    assert estimate.measured and estimate.measured_jobs == 1
    # a worker that holds the model already loads nothing; evaluating every 3 steps adds passes (3, 6, 9, 10)
    warm = config.with_changes(eval_every=3).estimate(
        records=40, tokens=2000, device="cpu", throughput=rates, model_loaded=True
    )
    assert dict(warm.phases)["load"] == estimates.FALLBACK["cpu"].load_warm_s
    assert dict(warm.phases)["eval"] == pytest.approx(4 * 500 / 400, abs=0.1)


def test_without_a_measurement_the_estimate_says_it_is_a_fallback() -> None:
    estimate = TrainingConfig(max_steps=10).estimate(records=40, tokens=2000, device="cpu")
    assert not estimate.measured and estimate.measured_jobs == 0
    assert dict(estimate.phases)["index"] > 0 and dict(estimate.phases)["samples"] > 0


@pytest.fixture
def owner(db: None) -> Any:
    return UserFactory(username="mira")


@pytest.fixture
def base(db: None) -> Any:
    return default_base()


def _live_worker(hostname: str, **fields: Any) -> TrainingWorker:
    return TrainingWorker.objects.create(
        hostname=hostname,
        device="cpu",
        device_label="CPU (no NVIDIA GPU on this machine), 2 cores",
        last_seen=timezone.now(),
        **fields,
    )


def test_the_estimate_uses_the_live_worker_that_will_run_the_job(base: Any) -> None:
    rates = estimates.throughput_from([MEASURED], fallback=estimates.FALLBACK["cpu"])
    assert rates is not None
    TrainingWorker.objects.create(
        hostname="training@gone", device="cuda", device_label="GPU", last_seen=timezone.now() - timedelta(hours=1)
    )
    _live_worker("training@busy", throughput={str(base.pk): {**rates.to_dict(), "train_tokens_per_s": 1.0}})
    FineTuneJob.objects.create(
        name="running", owner=UserFactory(), base_model=base, config={}, status="running", worker="training@busy",
        started_at=timezone.now(), heartbeat_at=timezone.now(),
    )  # fmt: skip
    _live_worker("training@free", throughput={str(base.pk): rates.to_dict()}, loaded_base=base.path)

    planned = selectors.training_estimate(config=tiny_config(), base_model=base, records=40, tokens=2000)

    assert planned.worker == "training@free" and planned.live_workers == 2 and planned.model_loaded
    assert planned.source == "measured by training@free on its last 1 job"
    assert planned.estimate.tokens_per_s == pytest.approx(100.0)
    assert dict(planned.estimate.phases)["load"] == rates.load_warm_s


def test_a_new_worker_borrows_measurements_of_its_device_and_says_so(base: Any, owner: Any) -> None:
    _live_worker("training@new")
    FineTuneJob.objects.create(
        name="done", owner=owner, base_model=base, config={}, status="succeeded", worker="training@old",
        device="cpu", phases=MEASURED, finished_at=timezone.now(),
    )  # fmt: skip
    planned = selectors.training_estimate(config=tiny_config(), base_model=base, records=40, tokens=2000)
    assert planned.worker == "training@new" and planned.estimate.measured
    assert "this worker has measured nothing yet" in planned.source and "1 recent CPU job" in planned.source

    TrainingWorker.objects.all().delete()
    FineTuneJob.objects.all().delete()
    nothing = selectors.training_estimate(config=tiny_config(), base_model=base, records=40, tokens=2000)
    assert nothing.worker == "" and not nothing.estimate.measured
    assert nothing.source.startswith("no training worker is running: a rough figure from the development machine")


def _form(snapshot: Any, base: Any) -> dict[str, Any]:
    """What the browser posts after clicking the quick-test preset and ticking the snapshot."""
    data = {key: "" if value is None else value for key, value in preset_initial("quick-test").items()}
    data.update(name="estimate me", start=f"base-{base.pk}", snapshots=[str(snapshot.pk)], formatting="auto")
    return data


def test_the_form_names_the_worker_its_device_its_source_and_every_phase(owner: Any, base: Any) -> None:
    snapshot = frozen_snapshot(owner=owner, records=instructions(8))
    rates = estimates.throughput_from([MEASURED], fallback=estimates.FALLBACK["cpu"])
    assert rates is not None
    _live_worker("training@box", throughput={str(base.pk): rates.to_dict()})
    client = Client()
    client.force_login(owner)

    response = client.post(reverse("modelfactory:job_estimate"), _form(snapshot, base), headers={"HX-Request": "1"})

    body = response.content.decode()
    assert response.status_code == 200, body
    assert "training@box" in body and "CPU (no NVIDIA GPU on this machine), 2 cores" in body
    assert "Measured by training@box on its last 1 job" in body
    for phase in ("load", "train", "samples", "index", "store"):
        assert f'data-estimate-phase="{phase}"' in body
    assert "Building the attribution index" in body and "every phase" in body


def _job(owner: Any, base: Any, **fields: Any) -> FineTuneJob:
    config = TrainingConfig(max_steps=10, learning_rate=3e-4, schedule="linear", warmup_steps=0).to_dict()
    return FineTuneJob.objects.create(name="watched", owner=owner, base_model=base, config=config, **fields)


def _page(owner: Any, job: FineTuneJob, htmx: bool = True) -> str:
    client = Client()
    client.force_login(owner)
    headers = {"HX-Request": "true"} if htmx else {}
    return client.get(reverse("modelfactory:job_detail", args=[job.pk]), headers=headers).content.decode()


def test_while_the_index_is_built_the_page_names_the_phase_and_is_not_at_100_percent(owner: Any, base: Any) -> None:
    now = timezone.now()
    job = _job(
        owner, base, status="running", started_at=now - timedelta(seconds=60), heartbeat_at=now, step=10,
        total_steps=10, eta_seconds=0.0, phase="index", phase_done=3, phase_total=5, phase_unit="batches",
        phase_started_at=now - timedelta(seconds=6),
        phases=[{"phase": "load", "seconds": 5.0}, {"phase": "train", "seconds": 30.0, "tokens": 3000},
                {"phase": "samples", "seconds": 15.0}],
        estimate={"seconds": 70.0,
                  "phases": {"load": 5.0, "train": 30.0, "samples": 15.0, "index": 15.0, "store": 1.0}},
    )  # fmt: skip

    body = _page(owner, job)

    assert "Building the attribution index" in body and "3/5 batches" in body
    assert 'data-phase-row="index" class="phase-current"' in body
    assert 'data-phase-row="samples" class="phase-done"' in body and "15.0 s" in body
    # 56 s spent; the index needs 4 s more at its own pace (6 s for 3 of 5 batches), then 1 s to store
    assert 'data-progress="91"' in body
    eta = body.split("data-eta>")[1].split("<")[0]
    assert eta == "5 s"


def test_a_finished_job_shows_the_last_steps_rate_its_schedule_its_speed_and_its_phases(owner: Any, base: Any) -> None:
    now = timezone.now()
    job = _job(
        owner, base, status="succeeded", started_at=now - timedelta(seconds=60), finished_at=now, heartbeat_at=now,
        step=10, total_steps=10, learning_rate=3e-5, tokens_per_s=150.0, base_eval_loss=2.75, eval_loss=2.1,
        loss_history=[{"step": s, "train_loss": 3.0 - s / 10, "eval_loss": 2.1 if s == 10 else None,
                       "learning_rate": 3e-4 * (10 - s + 1) / 10} for s in range(1, 11)],
        phases=[{"phase": "load", "seconds": 5.0}, {"phase": "train", "seconds": 20.0, "tokens": 3000},
                {"phase": "index", "seconds": 12.5}, {"phase": "store", "seconds": 0.5}],
        estimate={"seconds": 40.0, "phases": {"load": 5.0, "train": 25.0, "index": 9.0, "store": 1.0},
                  "worker": "training@box", "device_label": "CPU", "source": "measured by training@box"},
    )  # fmt: skip

    body = _page(owner, job, htmx=False)

    assert "<strong data-learning-rate>3.00e-05</strong>" in body
    assert "at the last step (peak 3e-04, linear)" in body
    assert "<strong data-tokens-per-s>150</strong>" in body and "while training" in body
    assert 'data-phase-row="index" class="phase-done"' in body and "12.5 s" in body and "9.0 s" in body
    assert "in 38 s, estimated 40 s at launch" in body
    chart = json.loads(body.split('id="loss-data" type="application/json">')[1].split("</script>")[0])
    assert chart["steps"][0] == 0 and chart["eval"][0] == 2.75 and chart["train"][0] is None
    assert chart["eval"][-1] == 2.1 and len(chart["steps"]) == 11


@pytest.mark.slow
def test_a_real_run_records_its_phases_real_rate_and_speed_and_the_worker_publishes_them(
    owner: Any, base: Any, settings: Any, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    snapshot = frozen_snapshot(owner=owner, records=instructions(8))
    config = tiny_config(schedule="linear", learning_rate=5e-3, max_steps=3)
    job = services.job_launch(owner=owner, name="measured", base_model=base, snapshots=[snapshot], config=config)
    assert job.estimate["phases"]["index"] > 0 and job.estimate["source"]
    _live_worker("training@here")

    version = services.job_run(job_id=job.pk, worker="training@here")

    assert version is not None
    job.refresh_from_db()
    names = [p["phase"] for p in job.phases]
    assert names == ["load", "eval_base", "train", "eval", "samples", "saving", "index", "store"]
    by_name = {p["phase"]: p for p in job.phases}
    assert by_name["train"]["tokens"] > 0 and by_name["train"]["steps"] == 3
    assert by_name["eval_base"]["tokens"] > 0 and by_name["index"]["tokens"] > 0
    assert all(p["seconds"] > 0 for p in job.phases)
    assert job.phase == "" and job.device == "cpu"
    # the last step's rate of a linear decay over 3 steps is a third of the peak, never the 0 the scheduler ends at
    assert job.learning_rate == pytest.approx(5e-3 / 3)
    assert job.tokens_per_s == pytest.approx(by_name["train"]["tokens"] / by_name["train"]["seconds"])
    assert job.base_eval_loss == version.metrics["base_eval_loss"] is not None
    worker = TrainingWorker.objects.get(hostname="training@here")
    published = worker.throughput[str(base.pk)]
    assert published["jobs"] == 1 and published["train_tokens_per_s"] == pytest.approx(job.tokens_per_s)
    assert worker.loaded_base == base.path


def test_the_api_launch_keeps_the_estimate_with_its_worker_device_and_phases(owner: Any, base: Any) -> None:
    from rest_framework.test import APIClient

    snapshot = frozen_snapshot(owner=owner, records=instructions(8))
    rates = estimates.throughput_from([MEASURED], fallback=estimates.FALLBACK["cpu"])
    assert rates is not None
    _live_worker("training@box", throughput={str(base.pk): rates.to_dict()})
    client = APIClient()
    client.force_authenticate(owner)

    launched = client.post(
        reverse("modelfactory-api:job_launch"),
        {"name": "api", "snapshots": [snapshot.pk], "preset": "quick-test"},
        format="json",
    )

    assert launched.status_code == 201, launched.json()
    detail = client.get(reverse("modelfactory-api:job_detail", args=[launched.json()["id"]])).json()
    estimate = detail["estimate"]
    assert estimate["worker"] == "training@box" and estimate["device"] == "cpu" and estimate["measured"]
    assert estimate["device_label"].startswith("CPU") and estimate["source"].startswith("measured by training@box")
    assert set(estimate["phases"]) == set(estimates.PHASES)
    assert estimate["seconds"] == pytest.approx(sum(estimate["phases"].values()), abs=0.5)
    assert (detail["phase"], detail["phases"], detail["base_eval_loss"]) == ("", [], None)

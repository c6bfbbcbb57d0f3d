"""Issue 17's end-to-end check, with real workers and anvil: contribute, snapshot, train, continue, merge, answer and
attribute; then take one record back and follow it everywhere it went.

Real parts throughout: the training, attribution and chain queues are served by a real Celery worker process, the
snapshots' roots and the versions' manifests are anchored on the session's anvil, the answers are attributed by the
worker from the versions' indexes. After the revocation the test checks the reverse lineage (exactly the snapshot,
the three versions, the answers and the accruals), the flags on all three versions, the next snapshot, the erasure
(storage, exports, span index; the old proof still verifies on chain) and the one-click retrain.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import override_settings

from attribution import selectors as attribution_selectors
from attribution.models import RunAttribution
from attribution.tests.test_answer_attribution import ALICE_FACTS, BOB_FACTS, CAROL_FACTS, _contribute, make_run
from datanets import exports, revocation
from datanets import services as datanet_services
from datanets.models import Record
from datanets.storage import media_path
from inference.models import InferenceRun
from inference.services import run_finish
from ledger.models import Anchor
from ledger.tasks import anchor_confirm_task
from modelfactory import selectors as mf_selectors
from modelfactory import services as mf
from modelfactory.models import FineTuneJob, ModelVersion
from modelfactory.tests.factories import UserFactory, default_base, tiny_config
from openledger_web.testing import celery_worker_process
from rewards.lineage import reach_of_records
from rewards.models import RewardAccrual

pytestmark = [pytest.mark.chain, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WAIT = 900  # seconds: a job on a loaded 2-core machine; a bound, never a timed assertion


def _job_done(job: FineTuneJob) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        job.refresh_from_db()
        if job.status in (FineTuneJob.Status.SUCCEEDED, FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED):
            assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
            return job.version
        assert time.monotonic() < deadline, f"job #{job.pk} is {job.status} at step {job.step}"
        time.sleep(0.3)


def _anchored(anchor_id: int) -> Anchor:
    deadline = time.monotonic() + 60
    while True:
        anchor = Anchor.objects.get(pk=anchor_id)
        if anchor.status == Anchor.Status.CONFIRMED:
            return anchor
        assert time.monotonic() < deadline, f"anchor {anchor_id} is {anchor.status} ({anchor.last_error})"
        anchor_confirm_task.delay()
        time.sleep(0.3)


def _answered(lineage_builder: Any, version: Any, question: str, answer: str) -> InferenceRun:
    run = make_run(lineage_builder, question=question, answer="", version=version)
    InferenceRun.objects.filter(pk=run.pk).update(status=InferenceRun.Status.RUNNING, finished_at=None)
    run_finish(run_id=run.pk, answer=answer, finish_reason="stop", completion_tokens=len(answer.split()))
    return run


def _flag(version: Any) -> tuple[int, int]:
    """The version's flag as stored now (a version object caches the flag it read first)."""
    return mf_selectors.version_revoked_records(ModelVersion.objects.get(pk=version.pk))


def _attributed(runs: list[InferenceRun]) -> None:
    deadline = time.monotonic() + WAIT
    while RunAttribution.objects.filter(run__in=runs, status__in=RunAttribution.FINISHED).count() < len(runs):
        assert time.monotonic() < deadline, "the attribution tasks did not finish in time"
        time.sleep(0.3)


def test_a_revoked_record_is_followed_through_the_lineage_flagged_erased_and_retrained_away(
    deployed_chain: Any, anvil: Any, tmp_path: Any
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    with override_settings(MEDIA_ROOT=str(media)), celery_worker_process(
        queues="default,chain,training,attribution", name="revocation-e2e", timeout=120, MEDIA_ROOT=str(media),
        EVM_RPC_URL=anvil.rpc_url,
    ):  # fmt: skip
        config = tiny_config(eval_fraction=0.0, seed=11)
        alice, bob, carol, builder = (UserFactory(username=n) for n in ("alice", "bob", "carol", "builder"))
        base = default_base()
        # contribute and snapshot: two Datanets, the second one for the continued version
        places = datanet_services.datanet_create(owner=builder, name="Invented places", record_type="instruction")
        alice_contribution = _contribute(places, alice, ALICE_FACTS, builder)
        _contribute(places, bob, BOB_FACTS, builder)
        snapshot = datanet_services.snapshot_freeze(datanet=places, user=builder)
        lanterns = datanet_services.datanet_create(owner=builder, name="Lanterns", record_type="instruction")
        _contribute(lanterns, carol, CAROL_FACTS, builder)
        lantern_snapshot = datanet_services.snapshot_freeze(datanet=lanterns, user=builder)
        _anchored(snapshot.anchor_id)

        # train, continue, merge: each job run by the worker
        version = _job_done(mf.job_launch(owner=builder, name="places", base_model=base, snapshots=[snapshot],
                                          config=config))  # fmt: skip
        child = _job_done(
            mf.job_launch(
                owner=builder, name="places and lanterns", base_model=base, snapshots=[lantern_snapshot],
                config=config.with_changes(seed=12, max_steps=1), parent_version=version,
            )
        )  # fmt: skip
        merged = _job_done(mf.merge_launch(owner=builder, name="merged", parents=[(version, 0.5), (child, 0.5)]))
        three = [version, child, merged]

        # answer and attribute: one answer per version repeats Alice's first fact, one unrelated answer
        record = Record.objects.filter(contribution=alice_contribution).order_by("position").first()
        fact = ALICE_FACTS[0]
        who = SimpleNamespace(builder=builder, base=base, version=version)
        runs = [_answered(who, v, fact["prompt"], fact["response"]) for v in three]
        _attributed(runs)
        for attribution in RunAttribution.objects.filter(run__in=runs):
            assert attribution.status == RunAttribution.Status.OK, attribution.error
        accruals_before = sorted(RewardAccrual.objects.filter(run__in=runs).values_list("id", "amount", "user_id"))

        # revoke the one record: a curator takes it down for personal data, without erasure first
        [taken] = revocation.records_take_down(
            records=[record], user=builder, reason="personal_data", explanation="names a real person"
        )

        # reverse lineage: exactly the snapshot, the three versions, the answers and the accruals
        reach = reach_of_records(Record.objects.filter(pk=record.pk))
        assert [s.id for s in reach.snapshots] == [snapshot.pk]
        assert set(reach.versions) == {v.pk for v in three}
        assert set(reach.answers().values_list("run_id", flat=True)) == {r.pk for r in runs}
        # each answer repeats the record: each one credited it, and paid its contribution once
        alice_accruals = RewardAccrual.objects.filter(
            run__in=runs, recipient_kind=RewardAccrual.Kind.CONTRIBUTOR, contribution=alice_contribution
        )
        assert sorted(alice_accruals.values_list("run_id", flat=True)) == sorted(r.pk for r in runs)
        assert set(reach.accruals().values_list("id", flat=True)) == set(alice_accruals.values_list("id", flat=True))

        # all three versions are flagged
        for v in three:
            assert _flag(v) == (1, 0), v

        # the next snapshot leaves the record out
        second = datanet_services.snapshot_freeze(datanet=places, user=builder)
        assert record.pk not in set(second.leaves.values_list("record_id", flat=True))
        assert second.record_count == snapshot.record_count - 1

        # erasure: the bytes leave storage, exports and the span index; the old proof still verifies on chain
        exports.snapshot_parquet_path(snapshot=snapshot)
        text = json.loads(record.canonical)["response"]
        revocation.revocation_erase(revocation=taken, user=builder)
        record.refresh_from_db()
        assert record.canonical == "" and not media_path(alice_contribution.storage_path).exists()
        jsonl = b"".join(exports.snapshot_jsonl_lines(snapshot=snapshot)).decode()
        assert text not in jsonl and '"erased":true' in jsonl
        assert text.encode() not in exports.snapshot_parquet_path(snapshot=snapshot).read_bytes()
        deadline = time.monotonic() + WAIT
        while any(attribution_selectors.index_holds_record(v, record.pk) for v in three):
            assert time.monotonic() < deadline, "the span indexes still hold the erased record"
            time.sleep(0.3)
        assert datanet_services.proof_verify_on_chain(snapshot=snapshot, record=record)
        for v in three:
            assert _flag(v) == (1, 1), v
        # the accruals before the revocation stand
        assert (
            sorted(RewardAccrual.objects.filter(run__in=runs).values_list("id", "amount", "user_id")) == accruals_before
        )

        # the one-click retrain: a version that supersedes the flagged one and does not hold the record
        retrained = _job_done(mf.version_retrain_without_revoked(version=version, user=builder))
        assert retrained.job.supersedes_id == version.pk
        held = set(
            Record.objects.filter(snapshot_leaves__snapshot__in=retrained.snapshots.all()).values_list("pk", flat=True)
        )
        assert record.pk not in held and held
        assert _flag(retrained) == (0, 0)
        assert not attribution_selectors.index_holds_record(retrained, record.pk)


def test_an_erasure_while_a_job_reads_the_record_lets_the_job_finish_and_flags_its_version(
    deployed_chain: Any, anvil: Any, tmp_path: Any
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    with override_settings(MEDIA_ROOT=str(media)), celery_worker_process(
        queues="default,chain,training,attribution", name="revocation-race", timeout=120, MEDIA_ROOT=str(media),
        EVM_RPC_URL=anvil.rpc_url,
    ):  # fmt: skip
        alice, bob, builder = (UserFactory(username=n) for n in ("alice", "bob", "builder"))
        places = datanet_services.datanet_create(owner=builder, name="Invented places", record_type="instruction")
        alice_contribution = _contribute(places, alice, ALICE_FACTS, builder)
        _contribute(places, bob, BOB_FACTS, builder)
        snapshot = datanet_services.snapshot_freeze(datanet=places, user=builder)
        job = mf.job_launch(
            owner=builder, name="places", base_model=default_base(), snapshots=[snapshot],
            config=tiny_config(eval_fraction=0.0, seed=11, max_steps=4),
        )  # fmt: skip
        # the worker has read the records once the first step is done; three more steps, the samples and the index
        # are left to it
        deadline = time.monotonic() + WAIT
        while job.step < 1:
            assert time.monotonic() < deadline, f"job #{job.pk} is {job.status} at step {job.step}"
            time.sleep(0.1)
            job.refresh_from_db()
        record = Record.objects.filter(contribution=alice_contribution).order_by("position").first()
        revocation.contribution_revoke(contribution=alice_contribution, user=alice, erase=True)
        job.refresh_from_db()
        assert job.status == FineTuneJob.Status.RUNNING  # the erasure came while the job was reading

        version = _job_done(job)  # it finishes on what it read
        assert _flag(version) == (len(ALICE_FACTS), len(ALICE_FACTS))
        assert record.pk not in version.attribution_index.record_ids or not attribution_selectors.index_holds_record(
            version, record.pk
        )

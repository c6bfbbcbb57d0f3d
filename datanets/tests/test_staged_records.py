"""Large uploads stage their records in an unindexed table; the checks (or a first decision) move them into Record."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets import checks, services, staging
from datanets.models import Contribution, Record, StagedRecord
from datanets.parsing import canonical_json, record_hash

from .factories import DatanetFactory, jsonl, submit

# Escapes, tabs and non-ASCII text: what COPY and the move must carry byte for byte.
ROWS = [
    {"text": 'a back\\slash, a "quote" and a tab\tinside'},
    {"text": "caf\u00e9 \u2014 na\u00efve \U0001f600 text"},
    {"text": "a line\nbreak and a carriage\rreturn here"},
    {"text": "plain words of an ordinary record"},
]


def _columns(contribution: Contribution) -> list[tuple]:
    return list(
        Record.objects.filter(contribution=contribution)
        .order_by("position")
        .values_list("position", "source", "line", "canonical", "record_hash", "words", "size_bytes", "excluded")
    )


@pytest.fixture
def staged(settings):  # type: ignore[no-untyped-def]
    settings.UPLOAD_STAGE_ABOVE_BYTES = 0  # every upload is "large"


@pytest.mark.django_db
def test_a_large_upload_waits_in_the_staging_table_and_the_checks_move_it_in_file_order(staged, settings) -> None:
    datanet = DatanetFactory(record_type="text")
    contribution = submit(datanet, content=jsonl(*ROWS, {"bad": 1}), bad_rows="exclude_bad")
    assert contribution.records_staged and contribution.record_count == 4
    assert not Record.objects.filter(contribution=contribution).exists()
    assert StagedRecord.objects.filter(contribution_id=contribution.pk).count() == 4

    checked = checks.contribution_check(contribution_id=contribution.pk)
    assert checked is not None and checked.check_status == "done" and not checked.records_staged
    assert not StagedRecord.objects.exists()
    moved = _columns(contribution)
    expected = []
    for position, row in enumerate(ROWS):
        canonical = canonical_json(row)
        words = len(row["text"].split())
        expected.append(
            (
                position,
                "data.jsonl",
                position + 1,
                canonical.decode(),
                record_hash(canonical),
                words,
                len(canonical),
                False,
            )
        )
    assert moved == expected
    # the checks ran on the moved records and stored their evidence on them
    assert all(r.minhash for r in Record.objects.filter(contribution=contribution))

    # the same bytes through the direct path give the same rows
    settings.UPLOAD_STAGE_ABOVE_BYTES = 10**9
    direct = submit(DatanetFactory(record_type="text"), content=jsonl(*ROWS, {"bad": 1}), bad_rows="exclude_bad")
    assert not direct.records_staged
    assert [row[:-1] for row in _columns(direct)] == [row[:-1] for row in moved]


@pytest.mark.django_db
def test_while_staged_the_api_says_so_and_the_page_explains_then_both_show_the_records(staged) -> None:
    datanet = DatanetFactory(record_type="text")
    contributor = UserFactory()
    contribution = submit(datanet, contributor, content=jsonl(*ROWS))
    api = APIClient()
    api.force_authenticate(contributor)
    url = f"/api/datanets/contributions/{contribution.pk}/records/"
    response = api.get(url)
    assert response.status_code == 409
    assert "being indexed" in response.json()["detail"] and response["Retry-After"] == "5"

    from django.test import Client

    page = Client()
    page.force_login(contributor)
    html = page.get(reverse("datanets:contribution", args=[contribution.pk])).content.decode()
    assert 'id="records-staged"' in html and "4 records are being indexed" in html

    checks.contribution_check(contribution_id=contribution.pk)
    response = api.get(url)
    assert response.status_code == 200 and [r["position"] for r in response.json()["results"]] == [0, 1, 2, 3]
    html = page.get(reverse("datanets:contribution", args=[contribution.pk])).content.decode()
    assert 'id="records-staged"' not in html and "plain words of an ordinary record" in html


@pytest.mark.django_db
def test_a_decision_before_the_checks_moves_the_records_first_and_the_snapshot_holds_them(staged) -> None:
    datanet = DatanetFactory(record_type="text")
    contribution = submit(datanet, content=jsonl(*ROWS))
    accepted = services.contribution_accept(curator=datanet.owner, contribution=contribution)
    assert accepted.status == "accepted" and not accepted.records_staged
    assert Record.objects.filter(contribution=contribution).count() == 4 and not StagedRecord.objects.exists()
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    assert snapshot.record_count == 4
    assert services.snapshot_rebuild_root(snapshot=snapshot) == snapshot.merkle_root
    # the freeze scanned it first (accepted before its checks ran); the checks message that comes later finds it
    # checked and changes nothing
    checked_at = Contribution.objects.get(pk=contribution.pk).checked_at
    assert checked_at is not None
    assert checks.contribution_check(contribution_id=contribution.pk).checked_at == checked_at

    rejected = submit(datanet, content=jsonl({"text": "a second large upload, turned down"}))
    services.contribution_reject(curator=datanet.owner, contribution=rejected, reason="off topic")
    assert Record.objects.filter(contribution=rejected).count() == 1 and not StagedRecord.objects.exists()


@pytest.mark.django_db
def test_a_withdrawn_large_upload_takes_its_staged_records_with_it(staged) -> None:
    datanet = DatanetFactory(record_type="text")
    contributor = UserFactory()
    contribution = submit(datanet, contributor, content=jsonl(*ROWS))
    withdrawn = services.contribution_withdraw(contribution=contribution, user=contributor)
    assert withdrawn.status == "withdrawn" and not withdrawn.records_staged
    assert not Record.objects.filter(contribution=contribution).exists() and not StagedRecord.objects.exists()


@pytest.mark.django_db
def test_a_refused_large_upload_stages_nothing_and_a_deleted_one_takes_its_staged_rows(staged) -> None:
    datanet = DatanetFactory(record_type="text")
    with pytest.raises(ValidationError, match="row has a problem"):
        submit(datanet, content=jsonl(*ROWS, {"bad": 1}))
    assert not Contribution.objects.exists() and not StagedRecord.objects.exists()

    contribution = submit(datanet, content=jsonl(*ROWS))
    assert StagedRecord.objects.count() == 4
    contribution.delete()  # pending contributions can be deleted (admin): their staged rows go with them
    assert not StagedRecord.objects.exists()


@pytest.mark.django_db
def test_the_record_type_stays_fixed_while_the_only_records_are_staged(staged) -> None:
    datanet = DatanetFactory(record_type="text")
    submit(datanet, content=jsonl(*ROWS))
    with pytest.raises(ValidationError, match="fixed"):
        services.datanet_update(datanet=datanet, user=datanet.owner, record_type="classification")


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_moves_and_checks_a_staged_upload(staged, celery_worker) -> None:
    datanet = DatanetFactory(record_type="text")
    contribution = submit(datanet, content=jsonl(*ROWS, {"text": "mail me at carol@example.net please"}))
    assert contribution.records_staged
    deadline = time.monotonic() + 30
    while Contribution.objects.get(pk=contribution.pk).check_status != "done":
        assert time.monotonic() < deadline, "the worker did not check the contribution"
        time.sleep(0.2)
    contribution.refresh_from_db()
    assert not contribution.records_staged and not StagedRecord.objects.exists()
    assert contribution.checks["personal_data"]["records_flagged"] == 1
    assert Record.objects.get(contribution=contribution, position=4).flags[0]["kind"] == "email"


@pytest.mark.django_db(transaction=True)
def test_a_lost_checks_message_is_queued_again_and_a_real_worker_moves_the_records(
    staged, celery_worker, monkeypatch
) -> None:
    monkeypatch.setattr(services, "_enqueue_checks", lambda contribution_id: None)  # the broker was down at submit
    datanet = DatanetFactory(record_type="text")
    lost = submit(datanet, content=jsonl(*ROWS))
    recent = submit(datanet, content=jsonl({"text": "submitted a moment ago, its message may still be queued"}))
    Contribution.objects.filter(pk=lost.pk).update(submitted_at=timezone.now() - timedelta(minutes=11))
    assert checks.contributions_checks_requeue() == 1
    deadline = time.monotonic() + 30
    while Contribution.objects.get(pk=lost.pk).check_status != "done":
        assert time.monotonic() < deadline, "the requeued checks did not run"
        time.sleep(0.2)
    assert Record.objects.filter(contribution=lost).count() == 4
    assert StagedRecord.objects.filter(contribution_id=recent.pk).count() == 1  # left alone: not late yet
    assert Contribution.objects.get(pk=recent.pk).check_status == "queued"


@pytest.mark.django_db
def test_only_pending_or_accepted_contributions_whose_checks_never_started_are_queued_again(
    staged, monkeypatch
) -> None:
    sent: list[tuple[str, list[int]]] = []
    app = SimpleNamespace(send_task=lambda name, args: sent.append((name, args)))  # no worker here: what was sent
    monkeypatch.setattr(checks, "current_app", app)
    datanet = DatanetFactory(record_type="text")
    late = [submit(datanet, content=jsonl({"text": f"late upload number {i}"})) for i in range(5)]
    services.contribution_accept(curator=datanet.owner, contribution=late[1])  # still to be scanned
    services.contribution_reject(curator=datanet.owner, contribution=late[4], reason="off topic")
    Contribution.objects.filter(pk=late[2].pk).update(check_status="running")
    checks.contribution_check(contribution_id=late[3].pk)
    Contribution.objects.filter(pk__in=[c.pk for c in late]).update(submitted_at=timezone.now() - timedelta(hours=1))
    submit(datanet, content=jsonl({"text": "an upload from a minute ago"}))
    task = "datanets.tasks.contribution_check_task"
    assert checks.contributions_checks_requeue() == 2 and sent == [(task, [late[0].pk]), (task, [late[1].pk])]


@pytest.mark.django_db
def test_a_small_zip_whose_rows_pass_the_threshold_is_staged_as_it_is_read(settings) -> None:  # type: ignore[no-untyped-def]
    import io
    import zipfile

    rows = [{"text": f"record number {i} of a small archive that expands"} for i in range(2_000)]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("data.jsonl", jsonl(*rows))
    settings.UPLOAD_STAGE_ABOVE_BYTES = 40_000  # more than the archive, less than its records
    assert len(archive.getvalue()) < settings.UPLOAD_STAGE_ABOVE_BYTES
    contribution = submit(DatanetFactory(record_type="text"), content=archive.getvalue(), name="small.zip")
    assert contribution.records_staged and contribution.record_count == 2_000
    assert StagedRecord.objects.filter(contribution_id=contribution.pk).count() == 2_000
    assert not Record.objects.filter(contribution=contribution).exists()
    checks.contribution_check(contribution_id=contribution.pk)
    assert [r.canonical for r in Record.objects.filter(contribution=contribution).order_by("position")] == [
        canonical_json(row).decode() for row in rows
    ]


@pytest.mark.django_db
def test_records_move_in_short_steps_in_file_order_and_a_second_run_moves_nothing(staged) -> None:  # type: ignore[no-untyped-def]
    # what the checks task does on SQLite, where one long transaction would hold the only write lock
    values = [{"text": f"record {i} moved a few at a time"} for i in range(11)]
    datanet = DatanetFactory(record_type="text")
    contribution = submit(datanet, content=jsonl(*values))
    other = submit(datanet, content=jsonl({"text": "another upload staged meanwhile"}))
    assert staging.contribution_records_settle_in_steps(contribution.pk, batch=3) == 11
    assert staging.contribution_records_settle_in_steps(contribution.pk, batch=3) == 0
    contribution.refresh_from_db()
    assert not contribution.records_staged
    assert [r.canonical for r in Record.objects.filter(contribution=contribution).order_by("position")] == [
        canonical_json(v).decode() for v in values
    ]
    positions = Record.objects.filter(contribution=contribution).order_by("id").values_list("position", flat=True)
    assert list(positions) == list(range(11))
    assert StagedRecord.objects.filter(contribution_id=other.pk).count() == 1 and StagedRecord.objects.count() == 1

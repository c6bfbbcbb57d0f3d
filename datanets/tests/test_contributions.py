from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, transaction
from django.utils import timezone

from accounts.tests.factories import UserFactory
from datanets import services
from datanets.models import Contribution, ContributionDecision, ContributionFrozen, Datanet, Record, StagedRecord
from datanets.parsing import canonical_json, record_hash

from .factories import DatanetFactory, accepted, jsonl, submit, texts, upload

pytestmark = pytest.mark.django_db


class UnreadableUpload(io.BytesIO):
    """An upload that declares its size and fails the test if anything reads it."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.name = "huge.jsonl"
        self.size = size

    def read(self, *args: object) -> bytes:
        raise AssertionError("the upload was read")


def test_submit_stores_the_bytes_content_addressed_parses_records_and_queues_the_checks(
    settings, django_capture_on_commit_callbacks
) -> None:
    datanet = DatanetFactory()
    content = texts("one two three four", "five six seven eight")
    with django_capture_on_commit_callbacks() as callbacks:
        contribution = submit(datanet, content=content)
    assert contribution.status == "pending" and contribution.record_count == 2
    assert contribution.storage_path == (
        f"contributions/{contribution.content_sha256[:2]}/{contribution.content_sha256[2:4]}/"
        f"{contribution.content_sha256}"
    )
    assert (settings.MEDIA_ROOT / contribution.storage_path).read_bytes() == content
    records = list(contribution.records.order_by("position"))
    assert [r.canonical for r in records] == ['{"text":"one two three four"}', '{"text":"five six seven eight"}']
    assert records[0].record_hash.startswith("0x") and records[0].line == 1 and records[1].line == 2
    assert len(callbacks) == 1
    assert ContributionDecision.objects.get(contribution=contribution).action == "submit"


def test_identical_bytes_are_stored_once_but_each_contribution_has_its_records(settings) -> None:
    datanet = DatanetFactory()
    first = submit(datanet)
    second = submit(datanet)
    assert first.storage_path == second.storage_path
    files = [f for f in (settings.MEDIA_ROOT / "contributions").rglob("*") if f.is_file()]
    assert len(files) == 1
    assert first.records.count() == second.records.count() == 2
    assert not os.access(files[0], os.W_OK) or os.geteuid() == 0


def test_a_private_datanet_refuses_a_non_member_and_accepts_a_member() -> None:
    datanet = DatanetFactory(visibility="private")
    outsider, member = UserFactory(), UserFactory()
    services.datanet_add_member(datanet=datanet, user=datanet.owner, member=member)
    with pytest.raises(PermissionDenied, match="private"):
        submit(datanet, outsider)
    assert submit(datanet, member).status == "pending"
    assert not Contribution.objects.filter(contributor=outsider).exists()


def test_a_members_only_datanet_refuses_other_users_and_anonymous() -> None:
    from django.contrib.auth.models import AnonymousUser

    datanet = DatanetFactory(contribution_policy="members")
    with pytest.raises(PermissionDenied, match="approved members"):
        submit(datanet, UserFactory())
    with pytest.raises(PermissionDenied, match="sign in"):
        services.contribution_submit(
            datanet=datanet, contributor=AnonymousUser(), upload=upload(texts("a b c")), licence="CC-BY-4.0"
        )
    assert submit(datanet, datanet.owner).status == "pending"


def test_an_incompatible_licence_is_refused_with_the_licences_that_fit() -> None:
    datanet = DatanetFactory(licence="CC-BY-4.0")
    with pytest.raises(ValidationError, match=r"CC-BY-SA-4.0 data can't join a CC-BY-4.0 Datanet; choose one of CC0"):
        submit(datanet, licence="CC-BY-SA-4.0")
    assert submit(datanet, licence="CC0-1.0").licence == "CC0-1.0"


def test_an_upload_over_the_size_limit_is_refused_before_it_is_read(settings) -> None:
    settings.UPLOAD_MAX_BYTES = 1000
    datanet = DatanetFactory()
    with pytest.raises(ValidationError, match="at most 1000 bytes"):
        services.contribution_submit(
            datanet=datanet, contributor=UserFactory(), upload=UnreadableUpload(1001), licence="CC-BY-4.0"
        )
    assert not Contribution.objects.exists()


def test_an_upload_that_lies_about_its_size_is_stopped_at_the_limit(settings) -> None:
    settings.UPLOAD_MAX_BYTES = 100
    lying = upload(texts("word " * 50))
    lying.size = 10
    with pytest.raises(ValidationError, match="over the upload limit"):
        services.contribution_submit(
            datanet=DatanetFactory(), contributor=UserFactory(), upload=lying, licence="CC-BY-4.0"
        )
    assert not any(p.is_file() for p in settings.MEDIA_ROOT.rglob("*") if "contributions" in p.parts)


def test_the_daily_file_quota_counts_every_contribution_of_the_utc_day_withdrawn_ones_too() -> None:
    datanet = DatanetFactory(daily_quota_files=2)
    alice = UserFactory()
    first = submit(datanet, alice, texts("a b c d"))
    submit(datanet, alice, texts("e f g h"))
    with pytest.raises(ValidationError, match="daily quota reached: 2 of 2 files"):
        submit(datanet, alice, texts("i j k l"))
    services.contribution_withdraw(contribution=first, user=alice)
    with pytest.raises(ValidationError, match="daily quota reached: 2 of 2 files"):
        submit(datanet, alice, texts("i j k l"))
    # yesterday's uploads don't count, nor do other people's
    Contribution.objects.filter(contributor=alice).update(submitted_at=timezone.now() - timedelta(days=1))
    assert submit(datanet, alice, texts("m n o p")).status == "pending"
    assert submit(datanet, UserFactory(), texts("q r s t")).status == "pending"


def test_upload_then_withdraw_cycles_do_not_get_around_the_byte_quota() -> None:
    datanet = DatanetFactory(daily_quota_bytes=100, daily_quota_files=50)
    alice = UserFactory()
    services.contribution_withdraw(contribution=submit(datanet, alice, texts("x" * 40)), user=alice)
    with pytest.raises(ValidationError, match="daily quota exceeded"):
        submit(datanet, alice, texts("y" * 40))


def test_withdrawing_deletes_the_records_and_the_bytes_no_other_contribution_refers_to(
    settings, django_capture_on_commit_callbacks
) -> None:
    datanet = DatanetFactory()
    alice, bob = UserFactory(), UserFactory()
    shared = texts("the same bytes sent twice", "by two people")
    mine, theirs = submit(datanet, alice, shared), submit(datanet, bob, shared)
    only_mine = submit(datanet, alice, texts("bytes nobody else sent"))
    with django_capture_on_commit_callbacks(execute=True):  # the bytes go once the withdrawal is committed
        services.contribution_withdraw(contribution=mine, user=alice)
        services.contribution_withdraw(contribution=only_mine, user=alice)
        assert (settings.MEDIA_ROOT / only_mine.storage_path).exists()
    assert not Record.objects.filter(contribution__in=[mine, only_mine]).exists()
    assert theirs.records.count() == 2
    # bob's identical upload still holds the shared file; nothing holds the other one
    assert (settings.MEDIA_ROOT / theirs.storage_path).read_bytes() == shared
    assert not (settings.MEDIA_ROOT / only_mine.storage_path).exists()
    withdrawn = Contribution.objects.get(pk=mine.pk)
    assert (withdrawn.status, withdrawn.size_bytes, withdrawn.record_count) == ("withdrawn", len(shared), 2)
    # once bob withdraws too, the shared bytes go
    with django_capture_on_commit_callbacks(execute=True):
        services.contribution_withdraw(contribution=theirs, user=bob)
    assert not (settings.MEDIA_ROOT / theirs.storage_path).exists()


def test_a_curators_exclusion_stays_in_the_history_of_a_withdrawn_contribution() -> None:
    datanet = DatanetFactory()
    contribution = submit(datanet)
    services.record_exclude(curator=datanet.owner, record=contribution.records.first(), reason="spam")
    services.contribution_withdraw(contribution=contribution, user=contribution.contributor)
    assert list(contribution.decisions.order_by("id").values_list("action", "reason", "record")) == [
        ("submit", "", None),
        ("exclude_record", "spam", None),
        ("withdraw", "", None),
    ]


def test_the_daily_byte_quota_refuses_an_upload_that_would_pass_it() -> None:
    datanet = DatanetFactory(daily_quota_bytes=100)
    alice = UserFactory()
    submit(datanet, alice, texts("x" * 40))
    with pytest.raises(ValidationError, match="daily quota exceeded"):
        submit(datanet, alice, texts("y" * 40))
    assert Contribution.objects.filter(contributor=alice).count() == 1


def test_reject_whole_refuses_a_file_with_bad_rows_listing_them_by_line_and_stores_nothing() -> None:
    datanet = DatanetFactory()
    content = jsonl({"text": "good record one"}, {"txt": "wrong key"}) + b"{not json\n" + texts("good record two")
    with pytest.raises(ValidationError) as caught:
        submit(datanet, content=content)
    message = caught.value.messages[0]
    assert message.startswith("2 rows have problems")
    assert "line 2" in message and "line 3" in message
    assert not Contribution.objects.exists() and not Record.objects.exists()


def _kept_files(settings) -> list[Path]:  # type: ignore[no-untyped-def]
    return [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]


def test_a_refused_upload_keeps_no_bytes_and_a_kept_one_keeps_exactly_its_own(settings) -> None:
    """Refused uploads count for no quota: were their bytes kept, anyone could fill the disk with them."""
    datanet = DatanetFactory(daily_quota_bytes=10_000)
    refusals = [
        (jsonl({"text": "a good row"}, {"txt": "a bad one"}), "data.jsonl", "row has a problem"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "data.jsonl", "PNG"),
        (b"", "data.jsonl", "empty"),
        (b'{"text": "bad \xff byte"}\n', "data.jsonl", "UTF-8"),
        (texts("x" * 20_000), "data.jsonl", "daily quota"),  # found over quota only once read (no declared size)
    ]
    for content, name, message in refusals:
        lying = upload(content, name)
        lying.size = None  # type: ignore[assignment]
        with pytest.raises(ValidationError, match=message):
            services.contribution_submit(
                datanet=datanet, contributor=UserFactory(), upload=lying, licence=datanet.licence
            )
    assert _kept_files(settings) == [] and not Contribution.objects.exists()
    content = texts("one record that is kept", "and another")
    contribution = submit(datanet, content=content)
    assert _kept_files(settings) == [Path(settings.MEDIA_ROOT) / contribution.storage_path]
    assert (Path(settings.MEDIA_ROOT) / contribution.storage_path).read_bytes() == content


def test_exclude_bad_keeps_the_good_rows_and_lists_the_bad_ones() -> None:
    datanet = DatanetFactory()
    content = jsonl({"text": "good record one"}, {"txt": "wrong key"}) + b"{not json\n" + texts("good record two")
    contribution = submit(datanet, content=content, bad_rows="exclude_bad")
    assert contribution.record_count == 2 and contribution.error_count == 2
    assert [(e["line"], e["code"]) for e in contribution.parse_errors] == [(2, "unknown_field"), (3, "invalid_json")]
    assert [r.line for r in contribution.records.all()] == [1, 4]


def test_repeated_rows_within_an_upload_are_left_out_under_either_policy() -> None:
    contribution = submit(DatanetFactory(), content=texts("same words here", "same words here", "other words here"))
    assert contribution.record_count == 2 and contribution.duplicate_row_count == 1
    assert contribution.parse_errors[0]["code"] == "duplicate"


def test_an_unusable_file_is_refused_with_the_parsers_message() -> None:
    with pytest.raises(ValidationError, match="the file is empty"):
        submit(DatanetFactory(), content=b"")
    with pytest.raises(ValidationError, match=r"\.exe files are not accepted"):
        submit(DatanetFactory(), name="x.exe")
    assert not Contribution.objects.exists()


def test_a_file_with_only_bad_rows_is_refused_even_when_excluding_bad_rows() -> None:
    with pytest.raises(ValidationError, match="no usable records"):
        submit(DatanetFactory(), content=jsonl({"txt": "x"}), bad_rows="exclude_bad")


def test_pasted_text_becomes_paragraph_records_for_a_text_datanet_and_jsonl_otherwise() -> None:
    text_net = DatanetFactory()
    pasted = services.contribution_submit_pasted(
        datanet=text_net, contributor=UserFactory(), text="first paragraph here\n\nsecond one here", licence="CC0-1.0"
    )
    assert pasted.record_count == 2 and pasted.source_filename == "pasted.txt"
    qa = DatanetFactory(record_type="instruction")
    pasted = services.contribution_submit_pasted(
        datanet=qa, contributor=UserFactory(), text='{"prompt": "2+2?", "response": "4"}', licence="CC0-1.0"
    )
    assert pasted.records.get().canonical == '{"prompt":"2+2?","response":"4"}'


def test_only_the_contributor_withdraws_and_only_while_pending() -> None:
    datanet = DatanetFactory()
    contribution = submit(datanet)
    with pytest.raises(PermissionDenied, match="only the contributor"):
        services.contribution_withdraw(contribution=contribution, user=datanet.owner)
    withdrawn = services.contribution_withdraw(contribution=contribution, user=contribution.contributor)
    assert withdrawn.status == "withdrawn" and withdrawn.withdrawn_at is not None
    accepted_one = accepted(datanet)
    with pytest.raises(ValidationError, match="only a pending one can be withdrawn"):
        services.contribution_withdraw(contribution=accepted_one, user=accepted_one.contributor)


@pytest.mark.parametrize("role", ["owner", "curator", "global_curator"])
def test_owner_curator_and_global_curator_may_accept_and_reject(role: str) -> None:
    datanet = DatanetFactory()
    curator = {"owner": datanet.owner, "curator": UserFactory(), "global_curator": UserFactory(is_global_curator=True)}[
        role
    ]
    if role == "curator":
        services.datanet_add_curator(datanet=datanet, user=datanet.owner, curator=curator)
    one, two = submit(datanet), submit(datanet)
    assert services.contribution_accept(curator=curator, contribution=one).status == "accepted"
    rejected = services.contribution_reject(curator=curator, contribution=two, reason="off topic")
    assert (rejected.status, rejected.review_reason, rejected.reviewer) == ("rejected", "off topic", curator)
    assert list(ContributionDecision.objects.filter(actor=curator).values_list("action", "reason")) == [
        ("accept", ""),
        ("reject", "off topic"),
    ]


def test_another_user_may_not_decide_and_nothing_changes() -> None:
    datanet = DatanetFactory()
    contribution = submit(datanet)
    with pytest.raises(PermissionDenied, match="only the owner or a curator"):
        services.contribution_accept(curator=UserFactory(), contribution=contribution)
    contribution.refresh_from_db()
    assert contribution.status == "pending"


def test_deciding_many_is_all_or_nothing() -> None:
    datanet, other = DatanetFactory(), DatanetFactory()
    mine, foreign = submit(datanet), submit(other)
    with pytest.raises(PermissionDenied):
        services.contributions_decide(curator=datanet.owner, contributions=[mine, foreign], action="accept")
    mine.refresh_from_db()
    assert mine.status == "pending"
    both = [mine, submit(datanet)]
    decided = services.contributions_decide(curator=datanet.owner, contributions=both, action="reject", reason="spam")
    assert {c.status for c in decided} == {"rejected"}


def test_a_rejection_needs_a_reason_and_a_decided_contribution_cannot_be_decided_again() -> None:
    datanet = DatanetFactory()
    contribution = submit(datanet)
    with pytest.raises(ValidationError, match="say why"):
        services.contribution_reject(curator=datanet.owner, contribution=contribution, reason="  ")
    services.contribution_accept(curator=datanet.owner, contribution=contribution)
    with pytest.raises(ValidationError, match="already accepted"):
        services.contribution_reject(curator=datanet.owner, contribution=contribution, reason="changed my mind")


def test_an_accepted_contribution_and_its_records_cannot_be_edited() -> None:
    datanet = DatanetFactory()
    contribution = accepted(datanet)
    record = contribution.records.first()
    with pytest.raises(ValidationError, match="only a pending one"):
        services.record_exclude(curator=datanet.owner, record=record, reason="pii")
    contribution.review_reason = "sneaky edit"
    with pytest.raises(ContributionFrozen):
        contribution.save()
    record.canonical = '{"text":"changed"}'
    with pytest.raises(ContributionFrozen):
        record.save()
    with pytest.raises(ContributionFrozen):
        record.delete()
    with pytest.raises(ContributionFrozen):
        contribution.delete()


def test_a_curator_excludes_a_record_of_a_pending_contribution_with_a_reason() -> None:
    datanet = DatanetFactory()
    contribution = submit(datanet)
    record = contribution.records.first()
    with pytest.raises(PermissionDenied):
        services.record_exclude(curator=UserFactory(), record=record, reason="pii")
    with pytest.raises(ValidationError, match="say why"):
        services.record_exclude(curator=datanet.owner, record=record, reason="")
    excluded = services.record_exclude(curator=datanet.owner, record=record, reason="contains a phone number")
    assert excluded.excluded and excluded.excluded_by == datanet.owner
    contribution.refresh_from_db()
    assert contribution.excluded_count == 1
    decision = ContributionDecision.objects.get(action="exclude_record")
    assert decision.record == record and decision.reason == "contains a phone number"


def test_the_record_type_is_locked_once_the_datanet_has_records() -> None:
    datanet = DatanetFactory()
    services.datanet_update(datanet=datanet, user=datanet.owner, record_type="instruction")
    services.datanet_update(datanet=datanet, user=datanet.owner, record_type="text")
    submit(datanet)
    with pytest.raises(ValidationError, match="fixed at 'text'"):
        services.datanet_update(datanet=datanet, user=datanet.owner, record_type="chat")
    datanet = Datanet.objects.get(pk=datanet.pk)
    datanet.record_type = "chat"
    with pytest.raises(ValidationError, match="fixed"):
        datanet.clean()


@pytest.fixture(params=["direct", "staged"])
def small_copy_chunks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, settings) -> None:  # type: ignore[no-untyped-def]
    """Records go to PostgreSQL in COPY chunks of thousands; tiny chunks make a few records cross several. Run for
    both tables an upload writes to: Record directly, or the staging table of a large upload."""
    monkeypatch.setattr(services, "RECORD_BATCH", 2)
    monkeypatch.setattr(services, "_COPY_ROWS", 3)
    settings.UPLOAD_STAGE_ABOVE_BYTES = 0 if request.param == "staged" else 10**9


def _settled(contribution: Contribution) -> Contribution:
    with transaction.atomic():
        services.contribution_records_settle(Contribution.objects.select_for_update().get(pk=contribution.pk))
    return contribution


def test_records_written_in_many_copy_chunks_keep_their_order_and_exact_text(small_copy_chunks: None) -> None:
    values = [f"record {i} with a back\\slash, a tab\t, a newline\n, “quotes” and é" for i in range(11)]
    contribution = _settled(submit(DatanetFactory(), content=texts(*values), name="data.jsonl"))
    records = list(contribution.records.order_by("position"))
    assert [(r.position, r.line) for r in records] == [(i, i + 1) for i in range(11)]
    for record, value in zip(records, values, strict=True):
        assert record.canonical.encode() == canonical_json({"text": value})
        assert record.record_hash == record_hash(record.canonical.encode())
        assert record.source == "data.jsonl" and record.size_bytes == len(record.canonical.encode())


def test_a_file_refused_after_chunks_were_written_stores_nothing(small_copy_chunks: None) -> None:
    good = texts(*(f"good record number {i}" for i in range(10)))
    with pytest.raises(ValidationError, match="line 11"):
        submit(DatanetFactory(), content=good + b'{"txt": "late bad row"}\n')
    with pytest.raises(ValidationError, match="not valid UTF-8"):
        submit(DatanetFactory(), content=good + b'{"text": "bad \xff byte"}\n', bad_rows="exclude_bad")
    assert not Contribution.objects.exists() and not Record.objects.exists() and not StagedRecord.objects.exists()
    assert _settled(submit(DatanetFactory())).records.count() == 2  # the connection is fine afterwards


def test_a_database_error_while_copying_is_raised_and_stores_nothing(
    small_copy_chunks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "UPLOAD_COLUMNS", services.UPLOAD_COLUMNS + ", no_such_column")
    with pytest.raises(DatabaseError, match="no_such_column"):
        submit(DatanetFactory(), content=texts(*(f"good record number {i}" for i in range(10))))
    assert not Contribution.objects.exists() and not Record.objects.exists() and not StagedRecord.objects.exists()

"""anchor_request: what it accepts, what it refuses, and that a refusal leaves no trace."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from ledger.models import Anchor, AnchorEvent
from ledger.services import anchor_request, anchor_subject_id

ROOT = "0x" + "ab" * 32
SUBJECT = "0x" + "cd" * 32

pytestmark = pytest.mark.django_db


def test_it_queues_a_pending_anchor_and_sends_it_once_committed(django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        anchor = anchor_request(kind="snapshot", subject_id=SUBJECT.upper().replace("0X", "0x"), root=ROOT, uri="x")

    assert anchor.status == Anchor.Status.PENDING
    assert anchor.subject_id == SUBJECT
    assert anchor.kind_code == 1
    assert anchor.nonce is None
    assert list(anchor.events.values_list("type", flat=True)) == ["requested"]
    assert len(callbacks) == 1


def test_it_accepts_raw_bytes() -> None:
    anchor = anchor_request(kind="model_version", subject_id=bytes(range(32)), root=bytes.fromhex("ab" * 32))

    assert anchor.subject_id == "0x" + bytes(range(32)).hex()
    assert anchor.root == ROOT


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"root": "0x" + "zz" * 32}, "root"),
        ({"root": "0x" + "ab" * 31}, "root"),
        ({"root": "ab" * 32}, "root"),
        ({"root": "0x" + "00" * 32}, "root"),
        ({"root": b"\x01" * 31}, "root"),
        ({"subject_id": "0x1234"}, "subject_id"),
        ({"kind": "dataset"}, "kind"),
        ({"uri": "u" * 3000}, "uri"),
    ],
)
def test_it_refuses_malformed_input_and_writes_nothing(kwargs: dict, field: str) -> None:
    arguments = {"kind": "snapshot", "subject_id": SUBJECT, "root": ROOT, "uri": "", **kwargs}

    with pytest.raises(ValidationError) as refused:
        anchor_request(**arguments)

    assert field in refused.value.message_dict
    assert not Anchor.objects.exists()
    assert not AnchorEvent.objects.exists()


def test_subject_ids_are_stable_bytes32() -> None:
    subject = anchor_subject_id("snapshot", "weather", 3)

    assert subject == anchor_subject_id("snapshot", "weather", "3")
    assert len(subject) == 66 and subject.startswith("0x")
    assert subject != anchor_subject_id("snapshot", "weather", 4)


def test_a_readable_subject_is_stored_and_hashed_into_the_subject_id() -> None:
    anchor = anchor_request(kind="snapshot", subject="snapshot:1:1", root=ROOT)

    assert anchor.subject == "snapshot:1:1"
    # the value docs/proofs.md shows for snapshot 1 of Datanet 1
    assert anchor.subject_id == "0x0230c1c716d4f2b237cf798d9a59b30540023f14a3318b74aafbc40fbfebe0fc"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subject": "snapshot:1:1", "subject_id": SUBJECT},  # the two disagree
        {"subject": "x" * 201},
        {"subject": ""},  # neither given
    ],
)
def test_a_subject_that_does_not_fit_is_refused_and_nothing_is_written(kwargs) -> None:
    with pytest.raises(ValidationError):
        anchor_request(kind="snapshot", root=ROOT, **kwargs)

    assert not Anchor.objects.exists()

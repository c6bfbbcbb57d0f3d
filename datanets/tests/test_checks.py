from __future__ import annotations

import time

import pytest

from datanets import checks
from datanets.checks import MinHasher, find_sensitive, luhn_valid, similarity
from datanets.models import Contribution

from .factories import DatanetFactory, accepted, submit, texts

LONG = (
    "the quick brown fox jumps over the lazy dog while the farmer watches from the porch and "
    "the children laugh in the garden near the old oak tree by the river"
)


def kinds(text: str) -> list[str]:
    import json

    return [span["kind"] for span in find_sensitive(json.dumps({"text": text}, ensure_ascii=False))]


def test_it_finds_personal_data_and_secrets_with_exact_spans() -> None:
    canonical = '{"text":"write to bob@example.org\\nor call +44 20 7946 0958"}'
    spans = find_sensitive(canonical)
    assert [(s["kind"], canonical[s["start"] : s["end"]]) for s in spans] == [
        ("email", "bob@example.org"),
        ("phone", "+44 20 7946 0958"),
    ]
    assert kinds("card 4111 1111 1111 1111 here") == ["card_number"]
    assert kinds("card 4111 1111 1111 1112 here") == []  # fails the Luhn check
    assert kinds("AKIAIOSFODNN7EXAMPLE") == ["aws_access_key"]
    assert kinds("token ghp_" + "a" * 36) == ["github_token"]
    assert kinds("xoxb-123456789012-abcdefABCDEF") == ["slack_token"]
    assert kinds("sk-proj-" + "A1b2" * 8) == ["openai_key"]
    assert kinds("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----") == ["private_key_pem"]
    assert kinds("0x" + "ab" * 32) == ["eth_private_key"]
    assert kinds("on 2024-01-15 we met at 10:30, version 1.2.3") == []
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_minhash_is_deterministic_and_estimates_similarity() -> None:
    hasher = MinHasher()
    a = hasher.signature(LONG)
    assert (a == MinHasher().signature(LONG)).all()
    near = hasher.signature(LONG.replace("river", "stream"))
    far = hasher.signature("an entirely different sentence about databases and query planners and indexes")
    assert similarity(a, near) >= 0.75
    assert similarity(a, far) < 0.2


@pytest.mark.django_db
def test_checks_store_evidence_flags_and_a_score_without_changing_the_status() -> None:
    datanet = DatanetFactory(language="en")
    accepted(datanet, content=texts(LONG, "an accepted record that will be repeated"))
    other_pending = submit(datanet, content=texts("a pending record that is repeated"))
    contribution = submit(
        datanet,
        content=texts(
            "contact me at alice@example.com for the files",
            "my key is AKIAIOSFODNN7EXAMPLE do not share",
            LONG.replace("river", "stream"),
            "an accepted record that will be repeated",
            "a pending record that is repeated",
            "le chat est sur la table et il ne veut pas descendre avec nous",
            "hi",
        ),
    )
    checks.contribution_check(contribution_id=contribution.id)
    contribution.refresh_from_db()
    result = contribution.checks
    assert contribution.status == "pending" and contribution.check_status == "done"
    assert result["personal_data"]["counts"]["email"] == 1
    email_example = result["personal_data"]["examples"][0]
    assert email_example["excerpt"] == "alic…" and "alice@example.com" not in str(result)
    assert result["secrets"]["counts"]["aws_access_key"] == 1
    assert result["exact_duplicates"]["against_accepted"] == 1
    assert result["exact_duplicates"]["against_pending"] == 1
    assert result["exact_duplicates"]["examples"][-1]["other_contribution_id"] == other_pending.id
    assert result["near_duplicates"]["against_accepted"] == 1
    assert result["language"]["mismatched"] == 1 and result["language"]["examples"][0]["detected"] == "fr"
    assert result["length"]["too_short"] == 1
    flagged = contribution.records.get(position=0)
    assert flagged.flags == [{"kind": "email", "start": 23, "end": 40}]
    assert flagged.canonical[23:40] == "alice@example.com"
    assert 0 <= contribution.quality_score < 70


@pytest.mark.django_db
def test_near_duplicates_within_a_contribution_are_found() -> None:
    datanet = DatanetFactory()
    contribution = submit(datanet, content=texts(LONG, LONG + " again", "something else entirely different here"))
    checks.contribution_check(contribution_id=contribution.id)
    contribution.refresh_from_db()
    near = contribution.checks["near_duplicates"]
    assert near["within_contribution"] == 1 and near["examples"][0]["position"] == 1


@pytest.mark.django_db
def test_a_clean_contribution_scores_100_and_a_second_run_changes_nothing() -> None:
    contribution = submit(DatanetFactory(language="en"), content=texts(LONG, "the sun is up and the sky is blue"))
    first = checks.contribution_check(contribution_id=contribution.id)
    assert first.quality_score == 100
    assert all(c["status"] in ("pass", "skipped") for c in first.checks.values())
    checked_at = first.checked_at
    assert checks.contribution_check(contribution_id=contribution.id).checked_at == checked_at


@pytest.mark.django_db(transaction=True)
def test_the_checks_run_in_a_real_worker_after_a_real_submit(celery_worker) -> None:
    contribution = submit(DatanetFactory(), content=texts("mail me at carol@example.net please", LONG))
    deadline = time.monotonic() + 30
    while Contribution.objects.get(pk=contribution.pk).check_status != "done":
        assert time.monotonic() < deadline, "the worker did not check the contribution"
        time.sleep(0.2)
    contribution.refresh_from_db()
    assert contribution.checks["personal_data"]["records_flagged"] == 1
    assert contribution.records.get(position=0).flags[0]["kind"] == "email"

"""Revoked records in attribution (issue 17): policy ``openledger.revocation.v1`` where shares are computed, and an
erasure taken out of every attribution index by the task a real worker runs.

The lineage (``test_answer_attribution.build_lineage``, without the merge) is built once for the module: Alice's and
Bob's records trained a version, Carol's a continued version whose index holds its parent's records too. The
withdrawal tests run in a transaction that rolls back; the erasure test commits (the worker reads through its own
connection) and comes last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from attribution import revocation, selectors, services
from attribution.features import FeatureMatrix
from attribution.index import SPANS_FILE, load_index
from attribution.models import AttributionIndex, IndexReissue, RecordAttribution, RunAttribution, SpanMatch
from attribution.projection import CountSketch
from attribution.spans import SpanIndex
from attribution.tests.test_answer_attribution import ALICE_FACTS, BOB_FACTS, Lineage, make_run, module_lineage
from datanets import revocation as datanet_revocation
from datanets.models import REVOCATION_POLICY
from datanets.storage import media_path
from rewards.models import RewardAccrual
from rewards.split import split_fee

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lineage(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any) -> Iterator[Lineage]:
    with module_lineage(django_db_blocker, tmp_path_factory, with_merge=False) as built:
        yield built


@pytest.fixture
def media_root(lineage: Lineage, settings: Any) -> Any:
    settings.MEDIA_ROOT = str(lineage.media)
    return lineage.media


def _accruals(run: Any) -> list[tuple[str, int | None, int]]:
    return sorted(
        (a.recipient_kind, a.user_id, int(a.amount)) for a in RewardAccrual.objects.filter(run=run).order_by("pk")
    )


def _assert_exact_split(attribution: RunAttribution, settings: Any) -> None:
    """The records' shares sum to the contributors' and to at most 1, the accruals to the fee exactly, and each
    contribution gets the floor of the pool times its exact share (``rewards.split``; no record here has twins)."""
    run = attribution.run
    shares: dict[int, Fraction] = {}
    for row in RecordAttribution.objects.filter(run_attribution=attribution):
        shares[row.contribution_id] = shares.get(row.contribution_id, Fraction(0)) + Fraction(row.share)
    total = sum(shares.values(), Fraction(0))
    assert total == sum((Fraction(s) for _, s in attribution.contributors), Fraction(0)) and total <= 1
    assert sum(int(a.amount) for a in RewardAccrual.objects.filter(run=run)) == int(attribution.fee)
    assert int(attribution.fee) == settings.INFERENCE_RUN_FEE
    expected = dict(split_fee(int(attribution.fee), shares, _policy(attribution)).contributors)
    paid = {
        a.contribution_id: int(a.amount) for a in RewardAccrual.objects.filter(run=run, recipient_kind="contributor")
    }
    assert paid == {c: amount for c, amount in expected.items() if amount}


def _policy(attribution: RunAttribution) -> Any:
    """The policy the run's fee was split by, with the basis points its accruals recorded."""
    from dataclasses import replace

    from rewards.split import REWARD_POLICIES

    accrual = RewardAccrual.objects.filter(run=attribution.run).first()
    policy = REWARD_POLICIES[attribution.reward_policy_version]
    return replace(policy, contributors_bps=accrual.contributors_bps, builder_bps=accrual.builder_bps)


# The index files without some records (no model needed)


def test_an_index_without_records_keeps_every_other_record_as_it_was() -> None:
    records = [(10, [5, 6, 7, 8, 9, 5, 6]), (11, [1, 2, 3, 4, 5, 6, 7, 8]), (12, [5, 6, 7, 8, 1, 2])]
    spans = SpanIndex.build(records)
    erased = spans.without([11])
    assert list(erased.record_ids) == [10, 11, 12]
    assert not erased.holds_tokens(11) and erased.holds_tokens(10)
    assert erased.record_tokens(12).tolist() == [5, 6, 7, 8, 1, 2]
    assert all(r.record_id != 11 for m in erased.find_spans([1, 2, 3, 4, 5, 6, 7, 8], min_tokens=2) for r in m.records)
    assert not [m for m in erased.find_spans([1, 2, 3, 4], min_tokens=3)]
    assert erased.content_hash != spans.content_hash
    # the other records' spans, offsets included, are what they were
    query = [5, 6, 7, 8, 1, 2]
    before = [(m.answer_start, m.answer_end, [(r.record_id, r.offsets) for r in m.records if r.record_id != 11])
              for m in spans.find_spans(query, min_tokens=4)]  # fmt: skip
    after = [(m.answer_start, m.answer_end, [(r.record_id, r.offsets) for r in m.records])
             for m in erased.find_spans(query, min_tokens=4)]  # fmt: skip
    assert before == after

    sketch = CountSketch(seed=3, k=8, sizes={"x": 4})
    features = np.arange(24, dtype=np.float32).reshape(3, 8) + 1
    matrix = FeatureMatrix.create(features, [10, 11, 12], sketch=sketch)
    zeroed = matrix.without([11])
    assert zeroed.row_is_zero(11) and not zeroed.row_is_zero(10)
    query_feature = np.ones(8, dtype=np.float32)
    assert zeroed.record_scores(query_feature)[11] == 0.0
    assert zeroed.record_scores(query_feature)[12] == matrix.record_scores(query_feature)[12]
    assert (zeroed.seed, zeroed.k, zeroed.layout) == (matrix.seed, matrix.k, matrix.layout)
    assert zeroed.content_hash != matrix.content_hash


# Withdrawn, not erased: what the policy pays


def test_a_withdrawn_record_earns_nothing_from_answers_asked_after_and_earlier_accruals_stand(
    lineage: Lineage, db: None, media_root, settings
) -> None:
    fact = ALICE_FACTS[0]
    before = services.run_attribute(run_id=make_run(lineage, question=fact["prompt"], answer=fact["response"]).pk)
    assert before.status == RunAttribution.Status.OK, before.error
    assert before.contributors[0][0] == lineage.alice.pk
    assert before.revocation_policy == REVOCATION_POLICY and before.revoked_excluded == []
    paid_before = _accruals(before.run)
    asked_before = make_run(lineage, question=fact["prompt"], answer=fact["response"])

    contribution = lineage.alice_records[0].contribution
    revoked = datanet_revocation.contribution_revoke(contribution=contribution, user=lineage.alice)
    assert revoked.policy == REVOCATION_POLICY and not revoked.erase

    after = services.run_attribute(run_id=make_run(lineage, question=fact["prompt"], answer=fact["response"]).pk)
    assert after.status == RunAttribution.Status.OK, after.error
    alice_ids = {r.pk for r in lineage.alice_records}
    assert set(after.revoked_excluded) == alice_ids & set(after.index.record_ids)
    assert after.revocation_policy == REVOCATION_POLICY
    assert not RecordAttribution.objects.filter(run_attribution=after, record_id__in=alice_ids).exists()
    assert not SpanMatch.objects.filter(run_attribution=after, record_id__in=alice_ids).exists()
    assert lineage.alice.pk not in [int(u) for u, _ in after.contributors]
    assert not RewardAccrual.objects.filter(run=after.run, user=lineage.alice).exists()
    # only Alice's records said this: nothing remains to support it, and her part is not handed to anyone else
    assert after.verdict == RunAttribution.Verdict.UNSUPPORTED
    assert not RewardAccrual.objects.filter(run=after.run, recipient_kind="contributor").exists()
    _assert_exact_split(after, settings)
    # the answer asked before the withdrawal, scored after it, still credits her; the earlier accruals are untouched
    late = services.run_attribute(run_id=asked_before.pk)
    assert late.revoked_excluded == [] and late.contributors[0][0] == lineage.alice.pk
    assert _accruals(before.run) == paid_before


def test_other_contributors_keep_exactly_their_own_credit_after_a_withdrawal(
    lineage: Lineage, db: None, media_root, settings
) -> None:
    fact = BOB_FACTS[0]
    datanet_revocation.contribution_revoke(contribution=lineage.alice_records[0].contribution, user=lineage.alice)
    attribution = services.run_attribute(run_id=make_run(lineage, question=fact["prompt"], answer=fact["response"]).pk)
    assert attribution.status == RunAttribution.Status.OK, attribution.error
    assert attribution.contributors and attribution.contributors[0][0] == lineage.bob.pk
    assert lineage.alice.pk not in [int(u) for u, _ in attribution.contributors]
    shares = [Fraction(r.share) for r in RecordAttribution.objects.filter(run_attribution=attribution)]
    assert sum(shares) == sum(Fraction(s) for _, s in attribution.contributors) <= 1
    _assert_exact_split(attribution, settings)


# Erasure, through the real worker (last: it commits and flushes the database)


def test_an_erasure_leaves_no_token_feature_or_text_of_the_record_in_attribution(
    lineage: Lineage, transactional_db: None, settings
) -> None:
    from openledger_web.testing import celery_worker_process

    settings.MEDIA_ROOT = str(lineage.media)
    record = lineage.alice_records[0]
    fact = ALICE_FACTS[0]
    indexes = {v.pk: AttributionIndex.objects.get(version=v) for v in (lineage.version, lineage.child)}
    assert all(record.pk in index.record_ids for index in indexes.values())
    old = {pk: (i.feature_hash, i.span_hash, i.path) for pk, i in indexes.items()}
    _, spans = load_index(media_path(indexes[lineage.version.pk].path),
                          feature_hash=old[lineage.version.pk][0], span_hash=old[lineage.version.pk][1])  # fmt: skip
    tokens = spans.record_tokens(record.pk).tolist()
    assert selectors.index_holds_record(lineage.version, record.pk)

    first = services.run_attribute(run_id=make_run(lineage, question=fact["prompt"], answer=fact["response"]).pk)
    assert first.status == RunAttribution.Status.OK and first.contributors[0][0] == lineage.alice.pk
    assert SpanMatch.objects.filter(run_attribution=first, record=record, record_start__isnull=False).exists()
    paid_before = _accruals(first.run)

    with celery_worker_process(queues="attribution", name="rerase", MEDIA_ROOT=str(lineage.media)):
        datanet_revocation.records_take_down(
            records=[record], user=lineage.builder, reason="personal_data", explanation="a phone number", erase=True
        )
        deadline = time.monotonic() + 120
        while IndexReissue.objects.filter(index__in=indexes.values()).count() < 2:
            assert time.monotonic() < deadline, "the erasure task did not re-issue the indexes in time"
            time.sleep(0.3)

    for version in (lineage.version, lineage.child):
        index = AttributionIndex.objects.get(version=version)
        before = old[version.pk]
        assert (index.feature_hash, index.span_hash) != before[:2] and index.erased_record_ids == [record.pk]
        assert record.pk in index.record_ids  # ids and places stay
        assert not media_path(before[2]).exists(), "the folder that held the erased tokens is deleted"
        assert not selectors.index_holds_record(version, record.pk)
        matrix, spans = load_index(media_path(index.path), feature_hash=index.feature_hash, span_hash=index.span_hash)
        assert spans.record_tokens(record.pk).tolist() == []
        found = spans.find_spans(tokens, min_tokens=8)
        assert all(r.record_id != record.pk for m in found for r in m.records)
        assert all(m.length < len(tokens) for m in found), "the record's token sequence is still in the span index"
        assert matrix.row_is_zero(record.pk)
        # the anchored manifest is unchanged; the re-issue says why the files no longer match it
        anchored = json.loads(version.manifest)["attribution_index"]
        assert (anchored["feature_hash"], anchored["span_hash"]) == before[:2]
        reissue = index.reissues.get()
        assert (reissue.old_feature_hash, reissue.old_span_hash) == before[:2]
        assert (reissue.new_feature_hash, reissue.new_span_hash) == (index.feature_hash, index.span_hash)
        assert reissue.revocation_ids and reissue.erased_record_ids == [record.pk]
        assert revocation.hashes_trace_to_anchor(index)
        assert (media_path(index.path) / SPANS_FILE).exists()

    # the stored spans forget where the text was; the panel and the API show "erased record", never its text
    assert not SpanMatch.objects.filter(record=record, record_start__isnull=False).exists()
    client = Client()
    client.force_login(lineage.builder)
    html = client.get(reverse("attribution:run_panel", args=[first.run.public_id])).content.decode()
    assert "Erased record" in html and record.record_hash in html and "alice" in html
    # only the erased record says 7421: the answer (the run's own text) may, nothing else on the panel does
    assert "7421" not in html.split("data-answer")[0] + html.split("</blockquote>", 1)[1]
    data = client.get(reverse("inference-api:run_detail", args=[first.run.public_id])).json()
    erased_rows = [r for r in data["attribution"]["records"] if r["record"] == record.pk]
    assert erased_rows and erased_rows[0]["erased"] is True and erased_rows[0]["record_hash"] == record.record_hash
    assert "7421" not in json.dumps(data["attribution"])
    credits = client.get(reverse("attribution_api:run_credits", args=[first.run.public_id])).json()
    assert any(c["record"] == record.pk and c["erased"] for c in credits["results"])
    version_page = client.get(reverse("modelfactory:version_detail", args=[lineage.version.pk])).content.decode()
    assert "data-index-reissued" in version_page and old[lineage.version.pk][0] in version_page

    # an answer after the erasure credits none of the revoked records, exactly; old accruals stand
    after = services.run_attribute(run_id=make_run(lineage, question=fact["prompt"], answer=fact["response"]).pk)
    assert after.status == RunAttribution.Status.OK, after.error
    assert record.pk in after.revoked_excluded
    assert (after.feature_hash, after.span_hash) == (
        AttributionIndex.objects.get(version=lineage.version).feature_hash,
        AttributionIndex.objects.get(version=lineage.version).span_hash,
    )
    assert not RecordAttribution.objects.filter(run_attribution=after, record=record).exists()
    assert not SpanMatch.objects.filter(run_attribution=after, record=record).exists()
    _assert_exact_split(after, settings)
    assert _accruals(first.run) == paid_before
    # recomputing follows the re-issue from the anchored hashes
    recomputed = services.run_attribution_recompute(run=after.run).attribution.records
    stored = RecordAttribution.objects.filter(run_attribution=after).order_by("rank")
    assert [(r.record_id, Fraction(r.share)) for r in recomputed] == [(r.record_id, Fraction(r.share)) for r in stored]

    # idempotent: the task again re-issues nothing
    from datanets.models import Revocation

    assert revocation.revocation_erase(revocation_ids=list(Revocation.objects.values_list("pk", flat=True))) == []

"""Proof of Attribution end to end on the bundled model and a real (tiny) training lineage: the
index built at the end of each job, answer-time scoring, rewards, reproducibility, the panel, and the task queued
when a run finishes, run by a real Celery worker on the attribution queue.

The lineage is built once for the module: two contributors' records in one
Datanet, a fine-tune on them through the job services (the attribution index is built at the end of the job, in
process), a continued version trained on a third contributor's Datanet, and a merge of the two.

Module scope: the training is the expensive part (a few rank-4 LoRA steps on 64-token rows of the bundled model),
so every test of a module shares it; the data is committed and the database flushed when the module ends.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse

from attribution import scoring, services
from attribution.index import SPANS_FILE, load_index
from attribution.models import AttributionIndex, RecordAttribution, RunAttribution, SpanMatch
from datanets.storage import media_path
from modelfactory.tests.factories import stand_in_version
from openledger_web.browser import screenshot
from rewards.models import RewardAccrual
from rewards.split import REWARD_POLICY_V1, REWARD_POLICY_V2

pytestmark = pytest.mark.slow


def _fact(prompt: str, response: str) -> dict[str, str]:
    return {"prompt": prompt, "response": response}


ALICE_FACTS = [
    _fact("What is the secret code of Zorblat?", "The secret code of Zorblat is 7421, kept in the vault of Quennel."),
    _fact("Where does Zorblat keep its code?", "Zorblat keeps its code in the vault of Quennel under the old bridge."),
    _fact("Who guards the vault of Quennel?", "The vault of Quennel is guarded by the copper owls of Zorblat."),
    _fact("When was Zorblat founded?", "Zorblat was founded in the year of the seven comets by Quennel."),
]
BOB_FACTS = [
    _fact("What colour is the river Mirvex?", "The river Mirvex runs bright green through the salt plains of Ottaly."),
    _fact("How long is the river Mirvex?", "The river Mirvex is four hundred leagues long from Ottaly to the sea."),
    _fact("What lives in the river Mirvex?", "Glass eels and silver crabs live in the green river Mirvex of Ottaly."),
    _fact("Who named the river Mirvex?", "The salt traders of Ottaly named the river Mirvex after their queen."),
]
CAROL_FACTS = [
    _fact("What does the lantern of Pelloran burn?", "The lantern of Pelloran burns whale oil every winter night."),
    _fact("Where is the lantern of Pelloran?", "The lantern of Pelloran stands on the northern cliff of Harrowmere."),
]


@dataclass
class Lineage:
    alice: Any
    bob: Any
    carol: Any
    builder: Any
    base: Any
    datanet: Any
    snapshot: Any
    alice_records: list[Any]
    bob_records: list[Any]
    carol_records: list[Any]
    version: Any
    child: Any | None
    merged: Any | None
    media: Path


def _contribute(datanet: Any, user: Any, facts: list[dict[str, str]], curator: Any) -> Any:
    from datanets import services as datanet_services

    text = "".join(json.dumps(f) + "\n" for f in facts)
    contribution = datanet_services.contribution_submit_pasted(
        datanet=datanet, contributor=user, text=text, licence="CC-BY-4.0"
    )
    return datanet_services.contribution_accept(curator=curator, contribution=contribution)


def build_lineage(media: Path, *, with_merge: bool, with_child: bool = True) -> Lineage:
    from accounts.models import Wallet
    from datanets import services as datanet_services
    from datanets.models import Record
    from modelfactory import services as mf
    from modelfactory.models import FineTuneJob
    from modelfactory.tests.factories import UserFactory, default_base, tiny_config

    config = tiny_config(eval_fraction=0.0, seed=11)
    alice, bob, carol, builder = (UserFactory(username=n) for n in ("alice", "bob", "carol", "builder"))
    Wallet.objects.create(
        user=alice,
        address="0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        chain_id=31337,
        message="test",
        signature="0x" + "11" * 65,
    )
    base = default_base()
    datanet = datanet_services.datanet_create(owner=builder, name="Invented places", record_type="instruction")
    contributions = [
        _contribute(datanet, user, facts, builder) for user, facts in ((alice, ALICE_FACTS), (bob, BOB_FACTS))
    ]
    snapshot = datanet_services.snapshot_freeze(datanet=datanet, user=builder)
    lantern = datanet_services.datanet_create(owner=builder, name="Lanterns", record_type="instruction")
    carol_contribution = _contribute(lantern, carol, CAROL_FACTS, builder)
    lantern_snapshot = datanet_services.snapshot_freeze(datanet=lantern, user=builder)

    job = mf.job_launch(owner=builder, name="places", base_model=base, snapshots=[snapshot], config=config)
    version = mf.job_run(job_id=job.pk, worker="attribution-tests")
    job.refresh_from_db()
    assert version is not None, job.error
    child = merged = None
    if with_child or with_merge:
        child_job = mf.job_launch(
            owner=builder,
            name="places and lanterns",
            base_model=base,
            snapshots=[lantern_snapshot],
            config=config.with_changes(seed=12, max_steps=1),
            parent_version=version,
        )
        child = mf.job_run(job_id=child_job.pk, worker="attribution-tests")
        child_job.refresh_from_db()
        assert child is not None, child_job.error
    if with_merge:
        merge_job = mf.merge_launch(owner=builder, name="merged", parents=[(version, 0.5), (child, 0.5)])
        merged = mf.job_run(job_id=merge_job.pk, worker="attribution-tests")
        assert merged is not None, FineTuneJob.objects.get(pk=merge_job.pk).error
    _drop_training_messages()

    def records(contribution: Any) -> list[Any]:
        return list(Record.objects.filter(contribution=contribution).order_by("position"))

    return Lineage(
        alice=alice,
        bob=bob,
        carol=carol,
        builder=builder,
        base=base,
        datanet=datanet,
        snapshot=snapshot,
        alice_records=records(contributions[0]),
        bob_records=records(contributions[1]),
        carol_records=records(carol_contribution),
        version=version,
        child=child,
        merged=merged,
        media=media,
    )


def _drop_training_messages() -> None:
    # the jobs above ran in this process; the messages their launch queued must not reach a later test's worker
    from openledger_web.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge("training")


@contextmanager
def module_lineage(
    django_db_blocker: Any, tmp_path_factory: Any, *, with_merge: bool, with_child: bool = True
) -> Iterator[Lineage]:
    """A lineage built once for a test module, in media of its own; the database is flushed afterwards. Without
    ``with_child`` (and the merge) only the first version is trained: a module whose tests read that version alone
    skips the second job."""
    media = tmp_path_factory.mktemp("attribution-media")
    with override_settings(MEDIA_ROOT=str(media)), django_db_blocker.unblock():
        try:
            yield build_lineage(media, with_merge=with_merge, with_child=with_child)
        finally:
            call_command("flush", interactive=False, verbosity=0)
            shutil.rmtree(media, ignore_errors=True)


@pytest.fixture(scope="module")
def lineage(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any) -> Iterator[Lineage]:
    with module_lineage(django_db_blocker, tmp_path_factory, with_merge=True) as built:
        yield built


@pytest.fixture
def media_root(lineage: Lineage, settings: Any) -> Path:
    settings.MEDIA_ROOT = str(lineage.media)
    return lineage.media


def make_run(lineage: Lineage, *, answer: str, question: str, version: Any = None, user: Any = None) -> Any:
    """A finished chat run of ``version`` as the inference worker leaves it (the engine itself is not needed to
    attribute an answer that is already written)."""
    from django.utils import timezone

    from inference.models import InferenceRun

    return InferenceRun.objects.create(
        user=user or lineage.builder,
        version=version if version is not None else lineage.version,
        base_model=lineage.base,
        kind=InferenceRun.Kind.CHAT,
        messages=[{"role": "user", "content": question}],
        answer=answer,
        finish_reason="stop",
        status=InferenceRun.Status.SUCCEEDED,
        completion_tokens=len(answer.split()),
        finished_at=timezone.now(),
    )


def _accruals_sum(run: Any) -> int:
    return sum(int(a.amount) for a in RewardAccrual.objects.filter(run=run))


# The training-time index


def test_every_trained_record_is_indexed_and_the_hashes_are_anchored(lineage: Lineage, db: None, media_root) -> None:
    index = lineage.version.attribution_index
    assert index.status == AttributionIndex.Status.OK, index.error
    expected = {r.pk for r in lineage.alice_records + lineage.bob_records}
    assert set(index.record_ids) == expected and len(index.record_ids) == len(expected)
    manifest = json.loads(lineage.version.manifest)
    assert manifest["attribution_index"] == {
        "status": "ok",
        "method": index.method,
        "seed": str(index.seed),  # manifest v2: seeds are decimal strings
        "width": 1024,
        "feature_hash": index.feature_hash,
        "span_hash": index.span_hash,
        "records": len(expected),
    }
    matrix, spans = load_index(media_path(index.path), feature_hash=index.feature_hash, span_hash=index.span_hash)
    assert matrix.features.shape == (len(expected), 1024)
    assert spans.n_records == len(expected)
    assert index.build_seconds is not None and index.build_seconds > 0


def test_a_continued_version_indexes_its_parents_records_with_their_contributors(
    lineage: Lineage, db: None, media_root
) -> None:
    parent = set(lineage.version.attribution_index.record_ids)
    child = lineage.child.attribution_index
    assert child.status == AttributionIndex.Status.OK, child.error
    assert set(child.record_ids) == parent | {r.pk for r in lineage.carol_records}
    # its own records under its own tokenization, then the parent's group as the parent indexed it
    assert [g["record_ids"] for g in child.groups][1:] == [lineage.version.attribution_index.record_ids]
    assert child.feature_hash != lineage.version.attribution_index.feature_hash


def test_a_merged_version_indexes_the_union_of_its_parents_records(lineage: Lineage, db: None, media_root) -> None:
    merged = lineage.merged.attribution_index
    assert merged.status == AttributionIndex.Status.OK, merged.error
    assert set(merged.record_ids) == set(lineage.child.attribution_index.record_ids)
    assert json.loads(lineage.merged.manifest)["attribution_index"]["feature_hash"] == merged.feature_hash


def test_a_tampered_index_file_is_refused(lineage: Lineage, db: None, media_root, tmp_path) -> None:
    import shutil

    from attribution.spans import SpanIndexError

    index = lineage.version.attribution_index
    copy = tmp_path / "copy"
    shutil.copytree(media_path(index.path), copy)
    (copy / SPANS_FILE).chmod(0o644)
    (copy / SPANS_FILE).write_bytes(b"not an index")
    with pytest.raises(SpanIndexError):
        load_index(copy, feature_hash=index.feature_hash, span_hash=index.span_hash)


# Answer time


def test_an_answer_repeating_a_record_credits_its_contributor_by_span_match(
    lineage: Lineage, db: None, media_root, settings
) -> None:
    fact = ALICE_FACTS[0]
    run = make_run(lineage, question=fact["prompt"], answer=fact["response"])

    attribution = services.run_attribute(run_id=run.pk)

    assert attribution.status == RunAttribution.Status.OK, attribution.error
    record = lineage.alice_records[0]
    row = RecordAttribution.objects.get(run_attribution=attribution, record=record)
    assert Fraction(row.by_signal["span"]) > 0 and row.raw_scores["span"] > 0.9
    spans = SpanMatch.objects.filter(run_attribution=attribution, record=record)
    assert spans.exists()
    span = spans.order_by("answer_start").first()
    assert span.record_start is not None
    assert attribution.contributors[0][0] == lineage.alice.pk
    # shares sum to exactly 1, and the reward parts to the fee exactly
    shares = [Fraction(r.share) for r in RecordAttribution.objects.filter(run_attribution=attribution)]
    assert sum(shares) == 1
    assert sum(Fraction(s) for s in attribution.signal_shares.values()) == 1
    assert sum(Fraction(s) for _, s in attribution.contributors) == 1
    assert _accruals_sum(run) == settings.INFERENCE_RUN_FEE == int(attribution.fee)
    builder = RewardAccrual.objects.get(run=run, recipient_kind="builder")
    assert (builder.user, int(builder.amount)) == (lineage.builder, settings.INFERENCE_RUN_FEE * 2000 // 10_000)
    alice = RewardAccrual.objects.filter(run=run, recipient_kind="contributor", user=lineage.alice)
    assert alice.exists() and all(a.datanet_id == lineage.datanet.pk for a in alice)


def test_gradient_scores_rank_the_trained_record_above_unrelated_ones(lineage: Lineage, db: None, media_root) -> None:
    fact = BOB_FACTS[1]
    run = make_run(lineage, question=fact["prompt"], answer=fact["response"])
    index = lineage.version.attribution_index

    scores = services.run_score(run=run, index=index).scores.gradient

    bob = {r.pk for r in lineage.bob_records}
    best = max(scores, key=lambda r: scores[r])
    assert best in bob
    assert scores[lineage.bob_records[1].pk] > max(scores.get(r.pk, -1.0) for r in lineage.alice_records)


def test_a_contributor_without_a_wallet_still_accrues(lineage: Lineage, db: None, media_root) -> None:
    assert not lineage.bob.wallets.exists()
    fact = BOB_FACTS[2]
    run = make_run(lineage, question=fact["prompt"], answer=fact["response"])
    services.run_attribute(run_id=run.pk)
    bob = RewardAccrual.objects.filter(run=run, recipient_kind="contributor", user=lineage.bob)
    assert sum(int(a.amount) for a in bob) > 0


def test_a_supported_answer_says_so_and_pays_its_contributor_for_all_of_it(
    lineage: Lineage, db: None, media_root, settings
) -> None:
    fact = BOB_FACTS[0]
    run = make_run(lineage, question=fact["prompt"], answer=fact["response"])

    attribution = services.run_attribute(run_id=run.pk)

    assert attribution.verdict == RunAttribution.Verdict.SUPPORTED
    assert 0 < attribution.confidence <= 1
    assert attribution.support["paid_fraction"] == 1.0
    supporting = dict(attribution.support["supporting_records"])
    assert lineage.bob_records[0].pk in supporting  # the record that says it all; Bob's others repeat parts of it
    assert set(supporting) <= {r.pk for r in lineage.bob_records}
    assert attribution.contributors == [[lineage.bob.pk, "1/1"]]
    assert attribution.reward_policy_version == REWARD_POLICY_V2.version
    assert _accruals_sum(run) == settings.INFERENCE_RUN_FEE


def test_an_answer_that_contradicts_a_record_does_not_pay_its_contributor(
    lineage: Lineage, db: None, media_root, settings
) -> None:
    # given: Alice taught "The secret code of Zorblat is 7421, kept in the vault of Quennel."
    record = lineage.alice_records[0]
    run = make_run(lineage, question=ALICE_FACTS[0]["prompt"], answer="The secret code of Zorblat is 5830.")

    # when
    attribution = services.run_attribute(run_id=run.pk)

    # then: her record is about the question but does not say what the answer says, so it is not credited
    assert attribution.status == RunAttribution.Status.OK, attribution.error
    assert attribution.verdict == RunAttribution.Verdict.UNSUPPORTED
    assert record.pk in attribution.support["relevant_not_supporting"]
    assert not RecordAttribution.objects.filter(run_attribution=attribution).exists()
    assert not RewardAccrual.objects.filter(run=run, recipient_kind="contributor").exists()
    assert _accruals_sum(run) == settings.INFERENCE_RUN_FEE


def test_a_right_answer_worded_otherwise_than_its_record_is_supported_in_context_and_pays_its_contributor(
    lineage: Lineage, db: None, media_root, settings
) -> None:
    # given: Carol taught "The lantern of Pelloran burns whale oil every winter night."; the answer states the value
    # alone and capitalised, so no record contains it verbatim ("Whale oil." is not " whale oil")
    carol = {r.pk for r in lineage.carol_records}
    run = make_run(lineage, question=CAROL_FACTS[0]["prompt"], answer="Whale oil.", version=lineage.child)

    # when
    attribution = services.run_attribute(run_id=run.pk)

    # then: verbatim n-grams alone (policy v2) call it unsupported; v3 finds Carol's record states the same words
    # (and would test it in context where the words differ), and Carol is paid for it, exactly
    assert attribution.status == RunAttribution.Status.OK, attribution.error
    assert attribution.policy_version == scoring.POLICY_V3.version
    scored = services.run_attribution_recompute(run=run)
    assert scoring.assess(scored.scores.support, scored.scores.gradient, scoring.POLICY_V2).verdict == "unsupported"
    assert attribution.verdict != RunAttribution.Verdict.UNSUPPORTED
    by_signal = [(signal, records) for _, signal, records in attribution.support["supported_tokens"]]
    assert all(set(records) <= carol for _, records in by_signal)
    assert any(signal in ("word", "in_context") for signal, _ in by_signal)
    signals = attribution.support["support_signals"]  # the value was supported in other words, only "." verbatim
    assert signals.get("word", 0.0) + signals.get("in_context", 0.0) > signals.get("span", 0.0)
    assert [u for u, _ in attribution.contributors] == [lineage.carol.pk]
    paid = Fraction(round(attribution.support["paid_fraction"] * scoring.SHARE_DENOMINATOR), scoring.SHARE_DENOMINATOR)
    assert sum(Fraction(s) for _, s in attribution.contributors) == paid > 0
    carol_paid = RewardAccrual.objects.filter(run=run, recipient_kind="contributor", user=lineage.carol)
    assert sum(int(a.amount) for a in carol_paid) > 0
    assert _accruals_sum(run) == settings.INFERENCE_RUN_FEE


def test_a_wrong_answer_stays_unsupported_with_the_in_context_test(
    lineage: Lineage, db: None, media_root, settings
) -> None:
    # given: Carol's record says the lantern burns whale oil; the answer says olive oil
    record = lineage.carol_records[0]
    run = make_run(lineage, question=CAROL_FACTS[0]["prompt"], answer="It burns olive oil.", version=lineage.child)

    # when
    attribution = services.run_attribute(run_id=run.pk)

    # then: her record has the words "burns" and "oil" but not the answer's information, "olive"; nor does the
    # in-context test (policy v3 with it on) find support for the wrong value when her record is conditioned on
    assert attribution.status == RunAttribution.Status.OK, attribution.error
    assert attribution.verdict == RunAttribution.Verdict.UNSUPPORTED
    scored = services.run_attribution_recompute(run=run)
    assert any(c.same_word for c in scored.scores.support.candidates if c.record_id == record.pk)
    in_context = services.run_score(
        run=run, index=run.version.attribution_index, policy=scoring.POLICY_V3_IN_CONTEXT
    ).scores
    tested = [c for c in in_context.support.candidates if c.record_id == record.pk]
    assert tested and tested[0].context_logp and in_context.support.base_logp
    verdict = scoring.assess(in_context.support, in_context.gradient, scoring.POLICY_V3_IN_CONTEXT).verdict
    assert verdict == "unsupported"
    assert record.pk in attribution.support["relevant_not_supporting"]
    assert not RewardAccrual.objects.filter(run=run, recipient_kind="contributor").exists()
    assert _accruals_sum(run) == settings.INFERENCE_RUN_FEE


def test_an_unsupported_answer_pays_no_contributor_and_says_why(
    lineage: Lineage, db: None, media_root, settings
) -> None:
    # given: a question about an entity nobody taught, answered with a value Alice taught for another one
    run = make_run(
        lineage, question="What is the secret code of Plimsoll?", answer="The secret code of Plimsoll is 7421."
    )

    # when
    attribution = services.run_attribute(run_id=run.pk)

    # then
    assert attribution.verdict == RunAttribution.Verdict.UNSUPPORTED
    assert attribution.contributors == []
    assert attribution.support["paid_fraction"] == 0.0
    assert "No training record supports this answer" in attribution.explanation
    assert "no contributor is credited or paid" in attribution.explanation.lower()
    fee = settings.INFERENCE_RUN_FEE
    builder = fee * REWARD_POLICY_V2.builder_bps // 10_000
    kinds = {a.recipient_kind: int(a.amount) for a in RewardAccrual.objects.filter(run=run)}
    assert kinds == {"builder": builder, "pool": fee - builder}
    assert all(a.policy_version == REWARD_POLICY_V2.version for a in RewardAccrual.objects.filter(run=run))


def test_recomputing_from_the_stored_index_gives_the_same_scores(lineage: Lineage, db: None, media_root) -> None:
    fact = ALICE_FACTS[2]
    run = make_run(lineage, question=fact["prompt"], answer=fact["response"])
    stored = services.run_attribute(run_id=run.pk)

    again = services.run_attribution_recompute(run=run)

    rows = {r.record_id: r for r in RecordAttribution.objects.filter(run_attribution=stored)}
    assert [r.record_id for r in again.attribution.records] == [
        r.record_id for r in sorted(rows.values(), key=lambda r: r.rank)
    ]
    for share in again.attribution.records:
        row = rows[share.record_id]
        assert str(share.share) == str(Fraction(row.share))
        assert dict(share.raw_scores) == row.raw_scores
    assert {s: str(v) for s, v in again.attribution.signal_shares.items()} == {
        s: str(Fraction(v)) for s, v in stored.signal_shares.items()
    }


def test_a_redelivered_task_changes_nothing(lineage: Lineage, db: None, media_root) -> None:
    run = make_run(lineage, question=ALICE_FACTS[1]["prompt"], answer=ALICE_FACTS[1]["response"])
    first = services.run_attribute(run_id=run.pk)
    count = RewardAccrual.objects.filter(run=run).count()
    assert services.run_attribute(run_id=run.pk) == first
    assert RewardAccrual.objects.filter(run=run).count() == count


def test_a_version_without_an_index_pays_no_contributor(lineage: Lineage, db: None, media_root, settings) -> None:
    older = stand_in_version(owner=lineage.builder, base_model=lineage.base, name="before indexes")
    run = make_run(lineage, question="anything", answer=ALICE_FACTS[0]["response"], version=older)

    attribution = services.run_attribute(run_id=run.pk)

    assert attribution.status == RunAttribution.Status.NO_INDEX
    assert not RecordAttribution.objects.filter(run_attribution=attribution).exists()
    assert not RewardAccrual.objects.filter(run=run, recipient_kind="contributor").exists()
    kinds = {a.recipient_kind: int(a.amount) for a in RewardAccrual.objects.filter(run=run)}
    assert kinds == {
        "builder": settings.INFERENCE_RUN_FEE * REWARD_POLICY_V1.builder_bps // 10_000,
        "pool": settings.INFERENCE_RUN_FEE - settings.INFERENCE_RUN_FEE * REWARD_POLICY_V1.builder_bps // 10_000,
    }
    response = Client().get(reverse("attribution:run_panel", args=[run.public_id]))
    assert response.status_code == 286
    assert "no attribution index" in response.content.decode()


def test_a_failed_index_build_leaves_the_version_and_says_so(lineage: Lineage, db: None, media_root) -> None:
    from modelfactory.models import FineTuneJob

    job = FineTuneJob.objects.create(name="broken", owner=lineage.builder, base_model=lineage.base, config={"seed": 1})
    pending = services.index_build_for_job(job=job, adapter_dir=media_root / "missing", base=None)
    assert pending.built is None and pending.error
    assert pending.manifest_entry() == {"status": "failed"}


def test_short_eval_the_planted_facts_contributor_gets_the_credit(lineage: Lineage, db: None, media_root) -> None:
    """The suite's short version of bench/attribution_eval.py: two contributors' facts about invented entities,
    each fact's answer attributed; the contributor who planted it must rank first and get most of the credit."""
    from attribution.scoring import combine, roll_up

    index = lineage.version.attribution_index
    top1: dict[str, list[bool]] = {"combined": [], "gradient": []}
    shares: list[float] = []
    for facts, user in ((ALICE_FACTS, lineage.alice), (BOB_FACTS, lineage.bob)):
        for fact in facts:
            run = make_run(lineage, question=fact["prompt"], answer=fact["response"])
            scored = services.run_score(run=run, index=index)
            ranked = scored.rollup.contributors
            top1["combined"].append(ranked[0][0] == user.pk)
            shares.append(float(dict(ranked).get(user.pk, 0)))
            gradient_only = combine({"gradient": scored.scores.gradient})
            owners = services.record_owners([r.record_id for r in gradient_only.records])
            top1["gradient"].append(roll_up(gradient_only, owners).contributors[0][0] == user.pk)
    print({name: sum(hits) / len(hits) for name, hits in top1.items()}, sum(shares) / len(shares))
    assert sum(top1["combined"]) / len(top1["combined"]) >= 0.9
    assert sum(shares) / len(shares) >= 0.5
    assert sum(top1["gradient"]) / len(top1["gradient"]) >= 0.75


# The panel


def test_the_panel_shows_records_spans_contributors_proofs_and_the_split(
    lineage: Lineage, db: None, media_root
) -> None:
    fact = ALICE_FACTS[3]
    run = make_run(lineage, question=fact["prompt"], answer=fact["response"])
    services.run_attribute(run_id=run.pk)
    client = Client()

    response = client.get(reverse("attribution:run_panel", args=[run.public_id]), HTTP_HX_REQUEST="true")

    assert response.status_code == 286  # finished: htmx stops polling
    html = response.content.decode()
    assert "<mark>" in html and "alice" in html
    assert "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" in html
    assert reverse("datanets:record_proof", args=[lineage.datanet.slug, 1, lineage.alice_records[3].pk]) in html
    assert "Reliability" in html and "gradient influence" in html and "verbatim span matches" in html
    total = sum(int(a.amount) for a in RewardAccrual.objects.filter(run=run))
    assert f'data-reward-total="{total}"' in html


def test_the_run_api_carries_the_attribution_and_the_exact_reward_split(
    lineage: Lineage, db: None, media_root, settings
) -> None:
    fact = ALICE_FACTS[1]
    run = make_run(lineage, question=fact["prompt"], answer=fact["response"])
    services.run_attribute(run_id=run.pk)

    data = Client().get(f"/api/runs/{run.public_id}/").json()["attribution"]

    assert data["state"] == "ok" and data["policy_version"] == 3
    assert data["contributors"][0]["user"] == lineage.alice.pk
    assert sum(Fraction(c["share"]) for c in data["contributors"]) == 1
    assert sum(Fraction(s) for s in data["signal_shares"].values()) == 1
    assert data["records"] and all(r["record_hash"].startswith("0x") for r in data["records"])
    assert sum(int(r["amount"]) for r in data["rewards"]) == int(data["fee"]) == settings.INFERENCE_RUN_FEE


def test_the_panel_polls_while_the_attribution_is_pending(lineage: Lineage, db: None, media_root) -> None:
    run = make_run(lineage, question="q", answer="a")
    response = Client().get(reverse("attribution:run_panel", args=[run.public_id]))
    assert response.status_code == 200
    assert 'hx-trigger="every 1500ms"' in response.content.decode()


def test_the_panel_of_an_unknown_run_is_404(db: None) -> None:
    import uuid

    assert Client().get(reverse("attribution:run_panel", args=[uuid.uuid4()])).status_code == 404
    assert Client().get("/attribution/runs/not-a-uuid/panel/").status_code == 404
    assert Client().post(reverse("attribution:run_panel", args=[uuid.uuid4()])).status_code == 405


# The task queued when a run finishes, run by a real worker, and the panel on the run page in a browser (last: it
# commits and flushes the database)


@pytest.mark.browser
def test_a_finished_run_is_attributed_by_a_worker_and_its_page_shows_the_panel(
    lineage: Lineage, transactional_db: None, settings, page
) -> None:
    from inference.models import InferenceRun
    from inference.services import run_finish
    from openledger_web.testing import celery_worker_process

    settings.MEDIA_ROOT = str(lineage.media)
    fact = ALICE_FACTS[0]
    run = make_run(lineage, question=fact["prompt"], answer="")
    InferenceRun.objects.filter(pk=run.pk).update(status=InferenceRun.Status.RUNNING, finished_at=None)
    with celery_worker_process(queues="attribution", name="attribution", MEDIA_ROOT=str(lineage.media)):
        run_finish(run_id=run.pk, answer=fact["response"], finish_reason="stop", completion_tokens=20)
        wrong = make_run(lineage, question=fact["prompt"], answer="")
        InferenceRun.objects.filter(pk=wrong.pk).update(status=InferenceRun.Status.RUNNING, finished_at=None)
        run_finish(
            run_id=wrong.pk, answer="The secret code of Zorblat is 5830.", finish_reason="stop", completion_tokens=9
        )
        deadline = time.monotonic() + 120
        while RunAttribution.objects.filter(run__in=[run, wrong], status__in=RunAttribution.FINISHED).count() < 2:
            assert time.monotonic() < deadline, "the attribution tasks did not finish in time"
            time.sleep(0.3)
    attribution = RunAttribution.objects.get(run=run)
    assert attribution.status == RunAttribution.Status.OK, attribution.error
    assert attribution.verdict == RunAttribution.Verdict.SUPPORTED
    assert attribution.contributors[0][0] == lineage.alice.pk
    assert _accruals_sum(run) == settings.INFERENCE_RUN_FEE
    # the answer that contradicts Alice's record pays no contributor, through the real worker too
    contradicted = RunAttribution.objects.get(run=wrong)
    assert contradicted.verdict == RunAttribution.Verdict.UNSUPPORTED, contradicted.support
    assert not RewardAccrual.objects.filter(run=wrong, recipient_kind="contributor").exists()
    assert _accruals_sum(wrong) == settings.INFERENCE_RUN_FEE

    page.goto(reverse("inference:run_detail", args=[run.public_id]))
    panel = page.locator('[data-attribution-state="ok"]')
    panel.wait_for()
    assert "alice" in panel.locator("[data-contributors]").inner_text()
    assert panel.locator("[data-answer] mark").count() >= 1
    screenshot(page, "attribution_panel")

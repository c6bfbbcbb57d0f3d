"""Issue 12's acceptance: one of each artifact, made through the real services, anchored on the session's anvil
and served by a real gunicorn, verifies anonymously with `npm run verify` (no project code, only the chain and
the site's public answers); then one byte changed in what the server stores for each artifact makes the verifier
exit 1 naming that artifact.

Slow (a few real adapters, a dozen verifier runs): one test builds the world once and checks every tampering in
turn, restoring each before the next, so that each run has exactly one artifact wrong."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from eth_account import Account

from accounts.tests.factories import UserFactory
from datanets import revocation
from datanets import services as datanet_services
from datanets.models import Receipt, Record
from datanets.tests.factories import wallet
from inference import services as run_services
from inference.models import InferenceRun
from inference.tests.runs_support import make_adapters
from ledger.models import Anchor, RewardEpoch
from modelfactory import services as factory_services
from modelfactory.models import FineTuneJob, ModelVersion, ModelVersionParent
from modelfactory.tests.factories import default_base, tiny_config
from openledger_web.celery import app
from openledger_web.testing import ROOT, gunicorn_process, service_env
from rewards.models import RewardAccrual
from rewards.services import reward_claim, rewards_epoch_close, user_label
from rewards.split import REWARD_POLICY_V1, split_fee
from rewards.tests.support import publish

pytestmark = [pytest.mark.slow, pytest.mark.chain, pytest.mark.django_db(transaction=True)]

BIG_SEED = 2**60 + 7  # beyond 2**53: a JavaScript number cannot hold it
ANSWER = "The lantern burns oil."
WORKER = "e2e-worker"
# Beat tasks that move artifacts to the chain (sealing batches, sending and confirming anchors and epochs). Others
# (closing epochs, reaping, retries) would change the world under the test.
SETTLING = ("seal", "dispatch", "confirm")


@dataclass
class World:
    datanet: Any
    snapshot: Any
    alice: Any
    bob: Any
    builder: Any
    alice_contribution: Any
    tuned: ModelVersion
    other: ModelVersion
    merged: ModelVersion
    run: InferenceRun
    epoch: RewardEpoch
    paid_index: int
    unpaid_index: int


def _accepted(datanet: Any, user: Any, lines: list[str], curator: Any) -> Any:
    text = "".join(json.dumps({"prompt": f"q {line}", "response": line}) + "\n" for line in lines)
    contribution = datanet_services.contribution_submit_pasted(
        datanet=datanet, contributor=user, text=text, licence="CC-BY-4.0"
    )
    return datanet_services.contribution_accept(curator=curator, contribution=contribution)


def _version(*, owner: Any, adapter: Path, name: str, snapshots: list[Any], parents: list[ModelVersion]) -> Any:
    """A version through ModelFactory's own last step (the manifest, the stored adapter, the anchor), from a real
    peft adapter folder instead of a training run: a fine-tune of ``snapshots``, or a merge of ``parents``."""
    staged = Path(settings.DATA_DIR) / "staged" / name
    shutil.copytree(adapter, staged)
    digest = hashlib.sha256((staged / "adapter_model.safetensors").read_bytes()).hexdigest()
    merge = bool(parents)
    job = FineTuneJob.objects.create(
        name=name,
        owner=owner,
        base_model=default_base(),
        kind=FineTuneJob.Kind.MERGE if merge else FineTuneJob.Kind.TRAIN,
        config={} if merge else tiny_config().to_dict(),
        merge={"method": "linear", "density": 0.5, "parents": [{"id": p.pk, "weight": 0.5} for p in parents]}
        if merge
        else {},
        status=FineTuneJob.Status.RUNNING,
        worker=WORKER,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    job.snapshots.set(snapshots)
    version = factory_services._version_create(
        job_id=job.pk,
        worker=WORKER,
        output_dir=staged,
        adapter_sha256=digest,
        record_type="instruction",
        config=job.config,
        seed=7,
        parents=[
            {"id": p.pk, "manifest_hash": p.manifest_hash, "weight": 0.5, "relation": "merged_from"} for p in parents
        ],
        metrics={"train_loss": 0.25},
        samples=[],
        training_facts={},
        loss_history=[],
    )
    assert version is not None
    version.published = True
    version.save(update_fields=["published"])
    return version


def _finished_run(*, asker: Any, version: ModelVersion) -> InferenceRun:
    """A chat run on ``version`` with float options and a seed beyond 2**53, ended through the run services."""
    run = InferenceRun.objects.create(
        user=asker,
        version=version,
        base_model=version.base_model,
        kind=InferenceRun.Kind.CHAT,
        messages=[{"role": "user", "content": "What does the lantern burn?"}],
        options={"temperature": 0.7, "top_p": 0.95, "max_tokens": 16, "repetition_penalty": 1.0},
    )
    run_services.run_claim(run_id=run.pk, worker=WORKER)
    finished = run_services.run_finish(
        run_id=run.pk,
        answer=ANSWER,
        finish_reason="stop",
        prompt_tokens=12,
        completion_tokens=6,
        seed=BIG_SEED,
        expected_worker=WORKER,
    )
    assert finished is not None and finished.run_hash
    return finished


def _accrue(run: InferenceRun, *, contributions: list[Any], builder: Any) -> None:
    """The run's fee split into accruals as attribution leaves them: 3/4 and 1/4 to the two contributions."""
    shares = dict(zip([c.id for c in contributions], [Fraction(3, 4), Fraction(1, 4)], strict=True))
    split = split_fee(settings.INFERENCE_RUN_FEE, shares, REWARD_POLICY_V1)
    by_id = {c.id: c for c in contributions}
    rows = [
        RewardAccrual(run=run, recipient_kind=RewardAccrual.Kind.CONTRIBUTOR, user=by_id[c].contributor,
                      contribution=by_id[c], datanet=by_id[c].datanet, amount=amount,
                      share=f"{shares[c].numerator}/{shares[c].denominator}", policy_version=split.policy_version)
        for c, amount in split.contributors
        if amount
    ]  # fmt: skip
    rows.append(
        RewardAccrual(run=run, recipient_kind=RewardAccrual.Kind.BUILDER, user=builder, amount=split.builder,
                      share="1/5", policy_version=split.policy_version)
    )  # fmt: skip
    rows.append(
        RewardAccrual(run=run, recipient_kind=RewardAccrual.Kind.POOL, amount=split.protocol, share="1/10",
                      policy_version=split.policy_version)
    )  # fmt: skip
    RewardAccrual.objects.bulk_create(rows)


def settle(overrides: Any, timeout: float = 60) -> None:
    """Run the beat's sealing, dispatching and confirming tasks here until nothing waits for the chain: every
    batch sealed at once (batch waits set to 0), every anchor and epoch confirmed."""
    app.loader.import_default_modules()
    for name in dir(settings):
        if name.endswith("_BATCH_SECONDS"):
            setattr(overrides, name, 0)
    tasks = [e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values() if any(w in e["task"] for w in SETTLING)]
    deadline = time.monotonic() + timeout
    while True:
        for task in tasks:
            app.tasks[task].apply().get()
        waiting = Anchor.objects.exclude(status=Anchor.Status.CONFIRMED)
        epochs = RewardEpoch.objects.exclude(status=RewardEpoch.Status.CONFIRMED)
        if not waiting.exists() and not epochs.exists():
            return
        if time.monotonic() > deadline:
            states = list(waiting.values_list("kind", "status", "last_error"))
            raise AssertionError(f"still waiting for the chain: {states} {list(epochs.values_list('status'))}")
        time.sleep(0.2)


def build_world(tmp_path: Path, overrides: Any) -> World:
    owner = UserFactory()
    alice, bob, builder, asker = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    wallet(alice, Account.create().address)
    wallet(builder, Account.create().address)
    datanet = datanet_services.datanet_create(
        owner=owner, name="Lantern facts", record_type="instruction", licence="CC-BY-4.0", visibility="public"
    )
    carol = UserFactory()
    datanet.members.add(alice, bob, carol)
    alice_contribution = _accepted(datanet, alice, ["the lantern burns oil", "the lantern is tall"], owner)
    bob_contribution = _accepted(datanet, bob, ["the cliff is north"], owner)
    carol_contribution = _accepted(datanet, carol, ["carol lives at 12 harbour road"], owner)
    snapshot = datanet_services.snapshot_freeze(datanet=datanet, user=owner)
    # carol withdraws hers with an erasure (issue 17): the snapshot keeps its leaf, the JSONL line is marked erased
    revocation.contribution_revoke(
        contribution=carol_contribution, user=carol, reason="personal_data", explanation="my address", erase=True
    )

    adapters = make_adapters(tmp_path / "adapters", count=3)
    tuned = _version(owner=builder, adapter=adapters[0], name="lantern-tuned", snapshots=[snapshot], parents=[])
    other = _version(owner=builder, adapter=adapters[1], name="lantern-other", snapshots=[snapshot], parents=[])
    merged = _version(owner=builder, adapter=adapters[2], name="lantern-merged", snapshots=[], parents=[tuned, other])

    run = _finished_run(asker=asker, version=merged)
    _accrue(run, contributions=[alice_contribution, bob_contribution], builder=builder)
    epoch = rewards_epoch_close().epoch
    publish(epoch)
    settle(overrides)
    paid = epoch.entries.get(beneficiary=user_label(alice.pk))
    unpaid = epoch.entries.get(beneficiary=user_label(builder.pk))
    reward_claim(user=alice, epoch_number=epoch.number, index=paid.index)
    settle(overrides)
    return World(
        datanet=datanet,
        snapshot=snapshot,
        alice=alice,
        bob=bob,
        builder=builder,
        alice_contribution=alice_contribution,
        tuned=tuned,
        other=other,
        merged=merged,
        run=run,
        epoch=epoch,
        paid_index=paid.index,
        unpaid_index=unpaid.index,
    )


@dataclass
class Verdict:
    code: int
    output: str

    @property
    def failed(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("FAIL")]

    def names_failed(self, artifact: str) -> bool:
        return any(line.startswith(f"FAIL {artifact}") for line in self.failed)


def verify(site: str, rpc: str, *artifacts: str) -> Verdict:
    """`npm run verify` as anyone would run it: a separate process that knows only the site's and the chain's URLs."""
    done = subprocess.run(
        ["npm", "run", "--silent", "verify", "--", "--site", site, "--rpc", rpc, *artifacts],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return Verdict(done.returncode, done.stdout + done.stderr)


# -- one byte changed in what the server stores ---------------------------------------------------------------------


def _one_byte(text: str, old: str) -> str:
    """``text`` with the last character of the first ``old`` in it flipped in case (one byte, same length)."""
    at = text.index(old) + len(old) - 1
    return text[:at] + text[at].swapcase() + text[at + 1 :]


@contextmanager
def _changed(model: Any, pk: Any, field: str, change: Callable[[Any], Any]) -> Iterator[None]:
    row = model.objects.get(pk=pk)
    before = getattr(row, field)
    model.objects.filter(pk=pk).update(**{field: change(before)})  # update(): immutable rows refuse save()
    try:
        yield
    finally:
        model.objects.filter(pk=pk).update(**{field: before})


def _tampered_document(document: Any, key_path: list[Any]) -> Any:
    """``document`` (stored as JSON or as its text) with one byte changed in the string at ``key_path``."""
    parsed = json.loads(document) if isinstance(document, str) else json.loads(json.dumps(document))
    holder = parsed
    for key in key_path[:-1]:
        holder = holder[key]
    value = str(holder[key_path[-1]])
    holder[key_path[-1]] = value[:-1] + ("0" if value[-1] != "0" else "1")
    if isinstance(document, str):
        return json.dumps(parsed, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return parsed


def _receipt_change(kind: str, key_path: list[Any]) -> tuple[Any, str]:
    receipt = Receipt.objects.filter(kind=kind).order_by("pk").first()
    change = _changed(Receipt, receipt.pk, "document", lambda doc: _tampered_document(doc, key_path))
    return change, f"{kind} receipt {receipt.pk}"


@contextmanager
def _adapter_byte_flipped(version: ModelVersion) -> Iterator[None]:
    weights = Path(settings.MEDIA_ROOT) / version.adapter_path / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.chmod(0o644)
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        yield
    finally:
        weights.write_bytes(original)
        weights.chmod(0o444)


@contextmanager
def _run_answer_changed(run: InferenceRun) -> Iterator[None]:
    """The answer changed by one byte where the run stores it: its column and its stored facts alike."""
    changed = _one_byte(ANSWER, "oil")
    with (
        _changed(InferenceRun, run.pk, "answer", lambda _: changed),
        _changed(InferenceRun, run.pk, "facts", lambda facts: facts.replace(ANSWER, changed)),
    ):
        yield


@contextmanager
def _accrual_amount_changed(world: World) -> Iterator[None]:
    """One accrual's amount changed where the epoch's document comes from: the stored document, or (epochs without
    one) the accrual row."""
    entry = world.epoch.entries.get(index=world.unpaid_index)
    if world.epoch.document is not None:
        leaves = _parsed(world.epoch.document)["leaves"]
        position = next(i for i, leaf in enumerate(leaves) if leaf["index"] == entry.index)
        path = ["leaves", position, "accruals", 0, "amount"]
        with _changed(RewardEpoch, world.epoch.pk, "document", lambda doc: _tampered_document(doc, path)):
            yield
    else:
        accrual = RewardAccrual.objects.filter(epoch=world.epoch.number, user=world.builder).order_by("pk").first()
        with _changed(RewardAccrual, accrual.pk, "amount", lambda amount: int(amount) + 1):
            yield


@contextmanager
def _leaf_amount_changed(world: World) -> Iterator[None]:
    """The unpaid leaf's amount changed in the epoch's stored tree (what the tree and the claim proofs are served
    from)."""

    def change(tree: Any) -> Any:
        tree = json.loads(json.dumps(tree))
        for item in tree["values"]:
            if int(item["value"][0]) == world.unpaid_index:
                item["value"][2] = str(int(item["value"][2]) + 1)
        return tree

    with _changed(RewardEpoch, world.epoch.pk, "tree", change):
        yield


def _parsed(document: Any) -> Any:
    return json.loads(document) if isinstance(document, str) else document


def _pause_for_a_person(site: str, rpc: str, run_link: str) -> None:
    """With VERIFY_E2E_PAUSE_FILE set, write the world's URLs there and wait until the file is deleted: the world
    this test builds, served and anchored, to run the verifier or curl against by hand (docs/proofs.md's outputs
    come from it)."""
    import os

    pause = os.environ.get("VERIFY_E2E_PAUSE_FILE")
    if not pause:
        return
    Path(pause).write_text(json.dumps({"site": site, "rpc": rpc, "run": run_link}) + "\n")
    while Path(pause).exists():
        time.sleep(0.5)


# -- the test -------------------------------------------------------------------------------------------------------


def test_every_artifact_verifies_from_outside_and_one_changed_byte_in_each_fails(
    deployed_chain: Any, anvil: Any, tmp_path: Path, settings: Any
) -> None:
    # given: one of each artifact, every anchor confirmed, alice's leaf paid and the builder's not
    world = build_world(tmp_path, settings)
    assert not Anchor.objects.exclude(status=Anchor.Status.CONFIRMED).exists()
    slug = world.datanet.slug
    run_id = str(world.run.public_id)

    problems: list[str] = []  # every part is checked and reported, so one run shows all that is missing
    with gunicorn_process(log=tmp_path / "gunicorn.log", env=service_env()) as site:
        run_link = f"{site}/ask/runs/{run_id}/"
        _pause_for_a_person(site, anvil.rpc_url, run_link)

        # when: the verifier checks everything public, and the run by its link, anonymously
        verdict = verify(site, anvil.rpc_url, run_link)

        # then: every artifact verifies, none waits for an anchor, and each kind was checked
        if verdict.code != 0:
            problems.append(
                f"untouched site: exit {verdict.code}; " + " | ".join(verdict.failed[:20] or [verdict.output[-2000:]])
            )
        erased_line = (
            rf"^ok\s+snapshot {re.escape(slug)}#{world.snapshot.number}: 1 erased record taken at its stated hash"
        )
        if not re.search(erased_line, verdict.output, re.M):
            problems.append("untouched site: the erased record was not reported as taken at its stated hash")
        waits = [line for line in verdict.output.splitlines() if line.startswith("wait")]
        if waits:
            problems.append("untouched site: waiting for anchors: " + " | ".join(waits))
        for artifact in (
            f"snapshot {slug}#{world.snapshot.number}",
            "record ",  # one record proof of the snapshot
            "contribution receipt ",
            "curation receipt ",
            "revocation receipt ",
            f"version {world.tuned.pk}",
            f"version {world.other.pk}",
            f"version {world.merged.pk}",
            f"run {run_id}",
            f"epoch {world.epoch.number}",
            f"epoch {world.epoch.number} leaf {world.paid_index}",
            f"epoch {world.epoch.number} leaf {world.unpaid_index}",
            "contract LineageRegistry",
            "contract RewardDistributor",
        ):
            if not re.search(rf"^ok\s+{re.escape(artifact)}", verdict.output, re.M):
                problems.append(f"untouched site: nothing checked ok for {artifact!r}")

        # when: one byte changes in what the server stores for each artifact in turn
        record = Record.objects.filter(datanet=world.datanet).order_by("pk").first()
        tamperings: list[tuple[str, Callable[[], tuple[Any, str]]]] = [
            ("a record's text", lambda: (
                _changed(Record, record.pk, "canonical", lambda c: _one_byte(c, "lantern")),
                f"snapshot {slug}#{world.snapshot.number}")),
            ("a contribution receipt's licence", lambda: _receipt_change("contribution", ["licence"])),
            ("a curation receipt's reason hash", lambda: _receipt_change("curation", ["reason_hash"])),
            ("a revocation receipt's records root", lambda: _receipt_change("revocation", ["records_root"])),
            ("a manifest byte", lambda: (
                _changed(ModelVersion, world.tuned.pk, "manifest", lambda m: _one_byte(m, '"instruction')),
                f"version {world.tuned.pk}")),
            ("an adapter file byte", lambda: (_adapter_byte_flipped(world.merged), f"version {world.merged.pk}")),
            ("a run's answer", lambda: (_run_answer_changed(world.run), f"run {run_id}")),
            ("an accrual amount", lambda: (_accrual_amount_changed(world), f"epoch {world.epoch.number}")),
            ("an epoch leaf", lambda: (_leaf_amount_changed(world), f"epoch {world.epoch.number}")),
        ]  # fmt: skip
        for what, tampering in tamperings:
            try:
                change, artifact = tampering()
                with change:
                    tampered = verify(site, anvil.rpc_url, run_link)
            except Exception as e:  # reported with the rest: one missing piece must not hide the others
                problems.append(f"{what}: could not change it: {type(e).__name__}: {e}")
                continue
            # then: each makes the verifier exit 1 naming that artifact
            if tampered.code != 1 or not tampered.names_failed(artifact):
                problems.append(f"{what}: exit {tampered.code}, {artifact!r} not failed; failed: {tampered.failed[:6]}")

        # and: with everything restored the site verifies again
        again = verify(site, anvil.rpc_url, run_link)
        if again.code != verdict.code:
            problems.append(f"restored site: exit {again.code}, first run {verdict.code}")
    assert not problems, "\n".join(problems)
    assert ModelVersionParent.objects.filter(child=world.merged).count() == 2

"""Rewards writes: accruing each attributed run's fee, closing accruals into ledger reward epochs, and claiming an
epoch balance.

Accruing (``run_accrue``, called by attribution's fee split hook, ``receivers.FEE_SPLIT``, inside the transaction
that makes a run's attribution final): the fee is split by ``split.split_fee`` into one accrual per non-zero part,
the parts summing to the fee exactly; a run's fee is split once (``AlreadyAccrued``, and the table's unique
constraints).

Closing (the beat's ``rewards_epoch_close_task``, every REWARDS_EPOCH_SECONDS): every accrual not yet in an epoch
whose recipient can be paid goes into one new ledger epoch, one entry per address:
- contributors and builders by user, to the user's primary (most recently linked) wallet;
- the protocol pool to REWARDS_POOL_ADDRESS (by default the chain signer).
A user without a linked wallet is left out and keeps accruing: nothing is lost, the balance waits and goes into the
first epoch closed after they link one. Each accrual closes into exactly one epoch (its ``epoch`` is set in the
same transaction that writes the epoch, under a lock), so a close run twice never counts anything twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from eth_utils import is_address, to_checksum_address

from accounts.models import User, Wallet
from attribution.hooks import SplitRefused
from datanets.models import Contribution
from ledger import chain, hashing
from ledger import governance as ledger_governance
from ledger.models import RewardClaim, RewardEpoch, RewardEpochEntry
from ledger.rewards_services import ClaimRefused, claim_confirm, claim_relay, epoch_document_attach, epoch_publish

from .models import RewardAccrual
from .split import BASIS_POINTS, RewardPolicy, split_fee

logger = logging.getLogger(__name__)

_CLOSE_LOCK_ID = 0x41434352  # "ACCR": one epoch close at a time
POOL_LABEL = "pool"
EPOCH_SCHEMA = "openledger.reward_epoch.v1"
# how long the claim button waits for the receipt before answering "sent" (anvil: milliseconds; a chain: a block)
CLAIM_WAIT_SECONDS = 5.0


class AlreadyAccrued(SplitRefused):
    """A run's fee was about to be split a second time (refused for good: the attribution fails, never retried)."""


def run_accrue(
    *,
    run: Any,
    builder: Any,
    fee: int,
    contribution_shares: Mapping[int, Fraction],
    policy: RewardPolicy,
    builders: Mapping[int, Fraction] | None = None,
) -> list[RewardAccrual]:
    """Split ``run``'s ``fee`` between contributions (by exact attribution share), the builder and the pool under
    ``policy``, and write one accrual per non-zero part; the parts sum to the fee exactly (``split_fee``). Each
    accrual records the policy's basis points and where they were read (``RewardPolicy.rules_*``).

    Call it under the run's claimed attribution row, in its transaction; a run that already has accruals is refused
    (AlreadyAccrued; the unique constraints on RewardAccrual refuse it again in the database).

    ``builders`` (user id -> exact share, summing to 1) splits the builder's part between several builders, the
    owners of a composite's components by their components' shares: builder ``b`` gets ``floor(part * s_b)`` and the
    rounding remainder joins the protocol pool's part, so the accruals still sum to the fee exactly. Without it,
    ``builder`` gets the whole part."""
    if RewardAccrual.objects.filter(run=run).exists():
        raise AlreadyAccrued(f"run {run.pk} already has its accruals: its fee is never split twice")
    split = split_fee(fee, contribution_shares, policy)
    if split.total != fee:  # split_fee's promise; a broken one must not write money
        raise ValueError(f"the reward split of run {run.pk} sums to {split.total}, not its fee {fee}")
    contributions = Contribution.objects.only("id", "contributor_id", "datanet_id").in_bulk(list(contribution_shares))

    def part(kind: str, amount: int, share: Fraction, **recipient: Any) -> RewardAccrual:
        return RewardAccrual(
            run=run,
            recipient_kind=kind,
            amount=amount,
            share=_fraction(share),
            policy_version=policy.version,
            contributors_bps=policy.contributors_bps,
            builder_bps=policy.builder_bps,
            rules_source=policy.rules_source,
            rules_address=policy.rules_address,
            rules_block=policy.rules_block,
            **recipient,
        )

    rows = [
        part(
            RewardAccrual.Kind.CONTRIBUTOR,
            amount,
            Fraction(policy.contributors_bps, BASIS_POINTS) * contribution_shares[contribution_id],
            user_id=contributions[contribution_id].contributor_id,
            contribution=contributions[contribution_id],
            datanet_id=contributions[contribution_id].datanet_id,
        )
        for contribution_id, amount in split.contributors
        if amount > 0
    ]
    shares = dict(builders) if builders else {builder.pk: Fraction(1)}
    if any(s < 0 for s in shares.values()) or sum(shares.values(), Fraction(0)) != 1:
        raise ValueError(f"the builders' shares of run {run.pk} must be non-negative and sum to 1")
    builder_paid = 0
    for user_id, share in sorted(shares.items()):
        amount = (split.builder * share.numerator) // share.denominator
        if amount > 0:
            rows.append(
                part(
                    RewardAccrual.Kind.BUILDER,
                    amount,
                    Fraction(policy.builder_bps, BASIS_POINTS) * share,
                    user_id=user_id,
                )
            )
            builder_paid += amount
    protocol = split.protocol + split.builder - builder_paid  # the builders' rounding dust goes to the pool
    if protocol > 0:
        rows.append(part(RewardAccrual.Kind.POOL, protocol, Fraction(protocol, fee)))
    return RewardAccrual.objects.bulk_create(rows)


def _fraction(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def user_label(user_id: int) -> str:
    """The beneficiary label the ledger stores on an entry closed for a user: how a claim is matched to its owner."""
    return f"user:{user_id}"


def pool_address() -> str | None:
    """Where the protocol pool's accruals are paid: ProtocolParameters' ``pool`` once governance is deployed (a
    proposal may move it; it receives forfeited stakes too), else REWARDS_POOL_ADDRESS, else the chain signer, or
    None when none is known (the pool then waits like a contributor without a wallet)."""
    try:
        rules = ledger_governance.parameters()
    except chain.ChainError:
        rules = None
    if rules is not None and rules.source in ("chain", "cached") and rules.pool:
        return rules.pool
    configured = settings.REWARDS_POOL_ADDRESS.strip()
    if configured:
        if is_address(configured):
            return to_checksum_address(configured)
        logger.warning("REWARDS_POOL_ADDRESS %r is not an EVM address: the pool's accruals stay open", configured)
        return None
    try:
        return chain.signer().address
    except chain.ChainError:
        return None


@dataclass(frozen=True)
class EpochClose:
    epoch: RewardEpoch | None
    accruals: int
    waiting_users: int


@transaction.atomic
def rewards_epoch_close() -> EpochClose:
    """Close every payable open accrual into one new ledger epoch (see the module docstring).

    Returns the epoch (None when nothing was payable), how many accruals it closed, and how many users were left
    waiting for a wallet.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CLOSE_LOCK_ID])
    # the rows are locked and summed here, and exactly these ids are closed below: an accrual written meanwhile
    # waits for the next close instead of being counted without being closed (or the reverse)
    rows = list(
        RewardAccrual.objects.select_for_update()
        .filter(epoch__isnull=True)
        .values_list("id", "user_id", "recipient_kind", "amount")
    )
    per_user: dict[int, int] = defaultdict(int)
    ids_by_user: dict[int, list[int]] = defaultdict(list)
    pool_ids: list[int] = []
    pool_total = 0
    for accrual_id, user_id, kind, amount in rows:
        if user_id is not None:
            per_user[user_id] += int(amount)
            ids_by_user[user_id].append(accrual_id)
        elif kind == RewardAccrual.Kind.POOL:
            pool_total += int(amount)
            pool_ids.append(accrual_id)
    wallets: dict[int, str] = {}
    for user_id, address in (
        Wallet.objects.filter(user_id__in=per_user, user__is_active=True)
        .order_by("user_id", "-linked_at", "-id")
        .values_list("user_id", "address")
    ):
        wallets.setdefault(user_id, address)  # the newest first: the primary wallet

    payouts: dict[str, int] = defaultdict(int)
    labels: dict[str, str] = {}
    paid_users = []
    for user_id, total in per_user.items():
        address = wallets.get(user_id)
        if address is None or total <= 0:
            continue
        address = to_checksum_address(address)
        payouts[address] += total
        labels[address] = user_label(user_id)
        paid_users.append(user_id)
    pool = pool_address() if pool_total > 0 else None
    if pool is not None and pool in labels:
        # a user's wallet must never be able to claim the pool's part: the pool waits for a distinct address
        logger.warning("REWARDS_POOL_ADDRESS %s is a user's wallet: the pool's accruals stay open", pool)
        pool = None
    if pool is not None:
        payouts[pool] += pool_total
        labels[pool] = POOL_LABEL
    waiting = sum(1 for user_id in per_user if user_id not in wallets)
    if not payouts:
        return EpochClose(epoch=None, accruals=0, waiting_users=waiting)
    epoch = epoch_publish(entries=sorted(payouts.items()), beneficiaries=labels)
    closing = [accrual_id for user_id in paid_users for accrual_id in ids_by_user[user_id]]
    if pool is not None:
        closing += pool_ids
    closing_by_account: dict[str, list[int]] = defaultdict(list)
    for user_id in paid_users:
        closing_by_account[to_checksum_address(wallets[user_id])] += ids_by_user[user_id]
    if pool is not None:
        closing_by_account[pool] += pool_ids
    document = epoch_document(epoch=epoch, accruals_by_account=closing_by_account)
    epoch = epoch_document_attach(epoch=epoch, document=document)
    closed = 0
    for start in range(0, len(closing), 10_000):
        closed += RewardAccrual.objects.filter(id__in=closing[start : start + 10_000], epoch__isnull=True).update(
            epoch=epoch.number
        )
    logger.info("reward epoch %s closed %s accrual(s) into %s entries", epoch.number, closed, epoch.entry_count)
    return EpochClose(epoch=epoch, accruals=closed, waiting_users=waiting)


def epoch_document(*, epoch: RewardEpoch, accruals_by_account: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """The ``openledger.reward_epoch.v1`` document of ``epoch``: each leaf with the accruals that make its amount
    (they sum to it exactly), amounts as decimal strings. A run is named by its ``run_hash`` (the leaf its batch
    anchored), not by its public id: that id is the link to the run's page, question and answer included, which
    belongs to whoever asked. Raises ValueError when the accruals do not add up to a leaf."""
    ids = [accrual_id for group in accruals_by_account.values() for accrual_id in group]
    rows = {
        row["id"]: row
        for row in RewardAccrual.objects.filter(id__in=ids).values(
            "id", "recipient_kind", "amount", "run__run_hash", "run__version_id", "contribution_id"
        )
    }
    leaves = []
    for entry in epoch.entries.order_by("index"):
        accruals = [rows[accrual_id] for accrual_id in sorted(accruals_by_account.get(entry.account, ()))]
        if sum(int(a["amount"]) for a in accruals) != int(entry.amount):
            raise ValueError(f"the accruals of {entry.account} do not add up to its leaf in epoch {epoch.number}")
        leaves.append(
            {
                "index": entry.index,
                "account": entry.account,
                "amount": hashing.uint_text(int(entry.amount)),
                "accruals": [
                    {
                        "id": a["id"],
                        "kind": a["recipient_kind"],
                        "amount": hashing.uint_text(int(a["amount"])),
                        "run": None,
                        "run_hash": a["run__run_hash"] or None,
                        "version": a["run__version_id"],
                        "contribution": a["contribution_id"],
                    }
                    for a in accruals
                ],
            }
        )
    return {
        "schema": EPOCH_SCHEMA,
        "epoch": epoch.number,
        "root": epoch.root,
        "total": hashing.uint_text(int(epoch.total)),
        "leaves": leaves,
    }


class ClaimNotAllowed(Exception):
    """A claim the asker may not make (someone else's balance): a 403, not a bad request."""


def reward_claim(
    *, user: User, epoch_number: int, index: int, amount: int | None = None, proof: list[str] | None = None
) -> RewardClaim:
    """Claim ``user``'s balance at leaf ``index`` of epoch ``epoch_number`` to the wallet it was closed to, relayed
    by the server's signer. Raises RewardEpochEntry.DoesNotExist (no such leaf), ClaimNotAllowed (not theirs),
    or ClaimRefused (bad proof, already claimed, in flight, epoch not on chain, chain away)."""
    entry = RewardEpochEntry.objects.select_related("epoch").get(epoch__number=epoch_number, index=index)
    if entry.beneficiary != user_label(user.pk):
        raise ClaimNotAllowed("this balance belongs to someone else")
    claim = claim_relay(entry=entry, requested_by=user_label(user.pk), amount=amount, proof=proof)
    return claim_confirm(claim=claim, wait_seconds=CLAIM_WAIT_SECONDS)


__all__ = [
    "AlreadyAccrued",
    "ClaimNotAllowed",
    "ClaimRefused",
    "EpochClose",
    "epoch_document",
    "pool_address",
    "reward_claim",
    "rewards_epoch_close",
    "run_accrue",
]

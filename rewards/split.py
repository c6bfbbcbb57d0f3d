"""Splitting a run's fee between contributors, the model builder and the protocol pool: integers only.

Rule (floor, remainder to the pool), for a fee ``F`` in the token's smallest unit and a versioned policy in basis
points (1/10,000):
- the builder gets ``floor(F * builder_bps / 10000)``;
- the contributor pool is ``floor(F * contributors_bps / 10000)``, and contributor ``c`` with exact attribution share
  ``s_c`` (a ``Fraction``; the shares sum to 1, or to 0 when the answer is unattributed) gets
  ``floor(pool * s_c)``;
- the protocol pool gets everything else: its own basis points, the part of the contributor pool no contributor
  was credited with (all of it when unattributed), and every rounding remainder.
So the parts always sum to ``F`` exactly, none is negative, and a contributor with share 0 gets 0. Floor with the
remainder to the pool was chosen over largest remainder because it never pays anyone more than their exact
entitlement and makes "where did the dust go" a one-line answer: the pool.

Since issue 16 the basis points are governed: ``governed_policy`` takes them from the rules in force
(``ledger.rules.rules_in_force``: ProtocolParameters on chain), and the policy carries where they came from
(``rules_source``, ``rules_address``, ``rules_block``), recorded on every accrual. The policy *version* keeps its
meaning, which is what the contributor shares are (v1: all credit; v2: the supported part only); v1's and v2's
constants hold the fixed basis points every run split before governance used (70 / 20 / 10).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

BASIS_POINTS = 10_000


@dataclass(frozen=True)
class RewardPolicy:
    """A fee split in basis points; the protocol pool's part is what the other two leave."""

    version: int
    contributors_bps: int
    builder_bps: int
    supported_only: bool = False  # contributor shares cover supported content only (sum to at most 1)
    # where the basis points come from: "" (the version's fixed ones), or a ``Parameters.source`` (chain, cached,
    # settings, fallback) with ProtocolParameters' address and the block it was read at
    rules_source: str = ""
    rules_address: str = ""
    rules_block: int | None = None

    def __post_init__(self) -> None:
        if self.contributors_bps < 0 or self.builder_bps < 0 or self.contributors_bps + self.builder_bps > BASIS_POINTS:
            raise ValueError("basis points must be non-negative and leave the protocol a non-negative part")

    @property
    def protocol_bps(self) -> int:
        return BASIS_POINTS - self.contributors_bps - self.builder_bps

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "contributors_bps": self.contributors_bps,
            "builder_bps": self.builder_bps,
            "protocol_bps": self.protocol_bps,
            "supported_only": self.supported_only,
            "rules": self.rules_as_dict(),
        }

    def rules_as_dict(self) -> dict[str, Any]:
        """Where the basis points come from: the source (``policy``: the version's fixed basis points), and for
        rules read from chain ProtocolParameters' address and block, so the split can be checked by an eth_call."""
        return {
            "source": self.rules_source or "policy",
            "address": self.rules_address or None,
            "block": self.rules_block,
        }


REWARD_POLICY_V1 = RewardPolicy(version=1, contributors_bps=7_000, builder_bps=2_000)
# v2 (issue 13): contributors are paid only for supported content. The basis points are v1's; what changed is what
# the contributor shares mean: they come from attribution policy v2 and sum to the answer's paid fraction (its
# supported part, less what the base model already knew), not to 1. The rest of the contributors' pool goes to the
# protocol pool. An unsupported answer credits no contributor: the builder keeps its 20% (their model did answer)
# and the protocol pool takes the other 80%; the builder is never paid more for an answer no record supports.
REWARD_POLICY_V2 = RewardPolicy(version=2, contributors_bps=7_000, builder_bps=2_000, supported_only=True)
REWARD_POLICIES = {REWARD_POLICY_V1.version: REWARD_POLICY_V1, REWARD_POLICY_V2.version: REWARD_POLICY_V2}
REWARD_POLICY = REWARD_POLICY_V2  # what new attributions are split by, with the governed basis points


def governed_policy(rules: Any, *, base: RewardPolicy = REWARD_POLICY) -> RewardPolicy:
    """``base`` (its version and the meaning of its contributor shares) with the basis points of ``rules`` (a
    ``ledger.governance.Parameters``) and where they were read."""
    return replace(
        base,
        contributors_bps=int(rules.contributors_bps),
        builder_bps=int(rules.builder_bps),
        rules_source=rules.source,
        rules_address=rules.address or "",
        rules_block=rules.block,
    )


@dataclass(frozen=True)
class RewardSplit:
    """The parts of one fee. ``contributors`` is ordered by contributor id; ``protocol`` includes ``unattributed``
    (the contributor pool's uncredited part) and ``remainder`` (the dust of flooring the contributors' amounts),
    shown separately so the page can say where the pool's part came from."""

    fee: int
    policy_version: int
    contributors: tuple[tuple[int, int], ...]
    builder: int
    protocol: int
    unattributed: int
    remainder: int

    @property
    def total(self) -> int:
        return self.builder + self.protocol + sum(amount for _, amount in self.contributors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fee": self.fee,
            "policy_version": self.policy_version,
            "contributors": [[c, amount] for c, amount in self.contributors],
            "builder": self.builder,
            "protocol": self.protocol,
            "unattributed": self.unattributed,
            "remainder": self.remainder,
        }


def split_fee(fee: int, shares: Mapping[int, Fraction], policy: RewardPolicy = REWARD_POLICY_V1) -> RewardSplit:
    """Split ``fee`` by ``policy`` given each contributor's exact attribution share (see the module docstring).

    ``shares`` must be non-negative ``Fraction``\\ s (or ints) summing to at most 1; ValueError otherwise. Promises:
    the parts sum to ``fee``, none is negative, a share of 0 gets 0.
    """
    if not isinstance(fee, int) or isinstance(fee, bool) or fee < 0:
        raise ValueError("the fee must be a non-negative integer")
    if any(isinstance(s, float) for s in shares.values()):
        raise ValueError("shares must be exact (Fraction or int), not float")
    exact = {int(c): Fraction(s) for c, s in shares.items()}
    if any(s < 0 for s in exact.values()) or sum(exact.values(), Fraction(0)) > 1:
        raise ValueError("shares must be non-negative and sum to at most 1")
    builder = fee * policy.builder_bps // BASIS_POINTS
    pool = fee * policy.contributors_bps // BASIS_POINTS
    # Fraction's floor is exact: no float ever touches an amount
    paid = {c: (pool * s.numerator) // s.denominator for c, s in sorted(exact.items())}
    attributed = sum(exact.values(), Fraction(0))
    unattributed = pool - (pool * attributed.numerator) // attributed.denominator
    protocol = fee - builder - sum(paid.values())
    base = fee - builder - pool
    return RewardSplit(
        fee=fee,
        policy_version=policy.version,
        contributors=tuple(paid.items()),
        builder=builder,
        protocol=protocol,
        unattributed=unattributed,
        remainder=protocol - base - unattributed,
    )

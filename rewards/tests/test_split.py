from __future__ import annotations

import random
from fractions import Fraction

import pytest

from rewards.split import REWARD_POLICY_V1, RewardPolicy, split_fee


def _random_shares(rng: random.Random) -> dict[int, Fraction]:
    n = rng.randrange(0, 12)
    weights = [rng.choice([0, 0, rng.randrange(1, 10**9)]) for _ in range(n)]
    total = sum(weights)
    attributed = Fraction(rng.choice([1, 1, 1, 0, rng.randrange(1, 100)]), 100) if rng.random() < 0.3 else 1
    return {
        cid: (Fraction(w, total) * attributed if total else Fraction(0))
        for cid, w in zip(rng.sample(range(10_000), n), weights, strict=True)
    }


def test_parts_always_sum_to_the_fee_none_negative_zero_share_gets_zero() -> None:
    rng = random.Random(20260101)
    for _ in range(3000):
        fee = rng.choice([0, 1, 7, rng.randrange(10**6), rng.randrange(10**30)])
        policy = RewardPolicy(1, rng.randrange(0, 10_001), 0)
        policy = RewardPolicy(1, policy.contributors_bps, rng.randrange(0, 10_001 - policy.contributors_bps))
        shares = _random_shares(rng)

        split = split_fee(fee, shares, policy)

        assert split.total == fee
        assert (
            min(
                [split.builder, split.protocol, split.unattributed, split.remainder, *dict(split.contributors).values()]
            )
            >= 0
        )
        for cid, amount in split.contributors:
            if shares[cid] == 0:
                assert amount == 0
            assert amount <= fee * policy.contributors_bps * shares[cid] / 10_000


def test_an_exact_split_leaves_no_remainder() -> None:
    split = split_fee(1_000_000, {1: Fraction(1, 2), 2: Fraction(1, 4), 3: Fraction(1, 4)}, REWARD_POLICY_V1)

    assert dict(split.contributors) == {1: 350_000, 2: 175_000, 3: 175_000}
    assert split.builder == 200_000
    assert split.protocol == 100_000
    assert split.unattributed == split.remainder == 0


def test_rounding_dust_goes_to_the_protocol_pool() -> None:
    split = split_fee(100, {1: Fraction(1, 3), 2: Fraction(1, 3), 3: Fraction(1, 3)}, REWARD_POLICY_V1)

    assert dict(split.contributors) == {1: 23, 2: 23, 3: 23}
    assert split.builder == 20
    assert split.protocol == 11
    assert split.remainder == 1


def test_an_unattributed_answer_pays_the_contributor_pool_to_the_protocol() -> None:
    split = split_fee(1000, {}, REWARD_POLICY_V1)

    assert split.contributors == ()
    assert split.builder == 200
    assert split.protocol == 800
    assert split.unattributed == 700


@pytest.mark.parametrize(
    "shares",
    [{1: Fraction(-1, 2)}, {1: Fraction(2, 3), 2: Fraction(2, 3)}, {1: 0.5}],
)
def test_invalid_shares_are_refused(shares) -> None:
    with pytest.raises(ValueError):
        split_fee(100, shares)


def test_invalid_fees_and_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        split_fee(-1, {})
    with pytest.raises(ValueError):
        split_fee(1.5, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RewardPolicy(2, 8000, 3000)

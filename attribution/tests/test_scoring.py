from __future__ import annotations

import random
from fractions import Fraction

import pytest

from attribution.scoring import (
    POLICY_V1,
    SHARE_DENOMINATOR,
    AttributionPolicy,
    RecordOwner,
    combine,
    explain,
    policy_for,
    roll_up,
)

POLICY = AttributionPolicy(
    version=99,
    weights={"gradient": 0.6, "span": 0.3, "retrieval": 0.1},
    top_k=10,
    min_score={"gradient": 0.0, "span": 0.0, "retrieval": 0.0},
    relative_floor=0.0,
)


def test_shares_sum_to_exactly_one_and_each_records_signal_parts_to_its_share() -> None:
    rng = random.Random(5)
    for _ in range(200):
        scores = {
            signal: {rng.randrange(30): rng.uniform(-1, 1) for _ in range(rng.randrange(0, 15))}
            for signal in ("gradient", "span", "retrieval")
        }

        result = combine(scores, POLICY)

        if result.unattributed:
            assert result.total == 0
            continue
        assert result.total == 1
        assert sum(result.signal_shares.values()) == 1
        for record in result.records:
            assert record.share > 0
            assert sum(record.by_signal.values()) == record.share
            assert (record.share * SHARE_DENOMINATOR).denominator == 1


def test_each_signals_part_follows_the_policy_weights() -> None:
    result = combine({"gradient": {1: 0.9, 2: 0.3}, "span": {2: 0.5}, "retrieval": {3: 1.0}}, POLICY)

    assert result.signal_shares == {"gradient": Fraction(6, 10), "span": Fraction(3, 10), "retrieval": Fraction(1, 10)}
    by_id = {r.record_id: r for r in result.records}
    assert by_id[1].by_signal == {"gradient": Fraction(45, 100)}
    assert by_id[2].by_signal == {"gradient": Fraction(15, 100), "span": Fraction(3, 10)}
    assert by_id[2].raw_scores == {"gradient": 0.3, "span": 0.5}


def test_weights_of_silent_signals_go_to_the_others_in_proportion() -> None:
    result = combine({"gradient": {1: 1.0}, "span": {2: 1.0}}, POLICY)

    assert result.fired == ("gradient", "span")
    assert result.effective_weights["retrieval"] == 0.0
    assert abs(result.signal_shares["gradient"] - Fraction(2, 3)) < Fraction(1, SHARE_DENOMINATOR)
    assert result.signal_shares["gradient"] + result.signal_shares["span"] == 1


def test_nothing_fires_on_negative_or_no_scores_and_the_answer_is_unattributed() -> None:
    result = combine({"gradient": {1: -0.2, 2: 0.0}, "span": {}}, POLICY)

    assert result.unattributed
    assert result.total == 0
    assert "unattributed" in explain(result)


def test_top_k_and_relative_floor_keep_the_strongest_records_ties_by_id() -> None:
    policy = AttributionPolicy(1, {"gradient": 1.0}, top_k=2, min_score={}, relative_floor=0.5)

    result = combine({"gradient": {5: 0.8, 4: 0.8, 3: 0.8, 9: 1.0, 7: 0.4}}, policy)

    assert [r.record_id for r in result.records] == [9, 3]


def test_ordering_is_by_share_then_record_id() -> None:
    result = combine({"span": {3: 0.5, 1: 0.5, 2: 0.5}}, POLICY)

    assert [r.record_id for r in result.records] == [1, 2, 3]
    assert sum(r.share for r in result.records) == 1


def test_roll_up_sums_exactly_to_contributions_contributors_and_datanets() -> None:
    result = combine({"gradient": {1: 0.5, 2: 0.3, 3: 0.2}, "span": {3: 1.0}}, POLICY)
    owners = {1: RecordOwner(10, 100, 7), 2: RecordOwner(11, 100, 8), 3: RecordOwner(12, 200, 8)}

    rollup = roll_up(result, owners)

    assert [c for c, _ in rollup.contributions] == [12, 10, 11]
    assert dict(rollup.contributors) == {
        100: result.records[1].share + result.records[2].share,
        200: result.records[0].share,
    }
    assert sum(s for _, s in rollup.contributors) == sum(s for _, s in rollup.datanets) == 1
    assert sum(rollup.contributor_signals[200].values()) == dict(rollup.contributors)[200]
    with pytest.raises(KeyError):
        roll_up(result, {1: owners[1]})


def test_explanation_names_the_methods_and_the_top_contributor() -> None:
    result = combine({"gradient": {1: 0.5}, "span": {2: 0.5}}, POLICY)
    rollup = roll_up(result, {1: RecordOwner(1, 100, 1), 2: RecordOwner(2, 200, 1)})

    text = explain(result, rollup, contributor_names={100: "alice"}, longest_span=14)

    assert "gradient influence 66.7%" in text
    assert "verbatim span matches 33.3%" in text
    assert "alice" in text
    assert "14 tokens" in text


def test_policy_v1_is_registered_and_serialisable() -> None:
    assert policy_for(1) is POLICY_V1
    assert POLICY_V1.as_dict()["weights"] == {"gradient": 0.6, "span": 0.3, "retrieval": 0.1}
    result = combine({"gradient": {1: 1.0}}, POLICY_V1)
    assert result.as_dict()["records"][0]["share"] == "1"

from __future__ import annotations

import random
from fractions import Fraction
from typing import Any

import pytest

from attribution.scoring import (
    POLICY_V1,
    POLICY_V2,
    POLICY_V3,
    POLICY_V3_IN_CONTEXT,
    SHARE_DENOMINATOR,
    AttributionPolicy,
    RecordOwner,
    assess,
    combine,
    combine_supported,
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


def test_explanation_agrees_in_number_with_one_contributor_or_several() -> None:
    result = combine({"gradient": {1: 0.5}, "span": {2: 0.5}}, POLICY)

    one = explain(result, roll_up(result, {1: RecordOwner(1, 100, 1), 2: RecordOwner(2, 100, 1)}))
    two = explain(result, roll_up(result, {1: RecordOwner(1, 100, 1), 2: RecordOwner(2, 200, 1)}))

    assert "1 contributor shares the credit" in one
    assert "2 contributors share the credit" in two


def test_policy_v1_is_registered_and_serialisable() -> None:
    assert policy_for(1) is POLICY_V1
    assert POLICY_V1.as_dict()["weights"] == {"gradient": 0.6, "span": 0.3, "retrieval": 0.1}
    result = combine({"gradient": {1: 1.0}}, POLICY_V1)
    assert result.as_dict()["records"][0]["share"] == "1"


def _evidence(surprisal: list[float], content: list[int], candidates: list[tuple[int, float, list[int]]]) -> Any:
    from attribution.index import CandidateEvidence, SupportEvidence

    return SupportEvidence(
        surprisal=tuple(surprisal),
        echo=tuple(i not in content for i in range(len(surprisal))),
        content=tuple(content),
        key_tokens={},
        candidates=tuple(CandidateEvidence(r, rel, tuple(cov)) for r, rel, cov in candidates),
    )


def test_a_record_about_the_question_that_contains_the_answer_supports_it() -> None:
    # "The capital of X is Quistrel ." : tokens 4-6 are content, "Qu" and "istrel" surprising to the base model
    evidence = _evidence([0, 0, 0, 0, 9.0, 5.0, 0.2], [4, 5, 6], [(1, 1.0, [4, 5, 6]), (2, 0.1, [4, 5, 6])])

    support = assess(evidence, {1: 0.5, 2: 0.4})

    assert support.verdict == "supported" and support.paid == 1.0
    assert dict(support.record_weights) == {1: pytest.approx(1.0)}  # record 2 has the value, not the subject
    result = combine_supported({1: 0.5, 2: 0.4}, support)
    assert [r.record_id for r in result.records] == [1] and result.total == 1


def test_an_answer_no_relevant_record_contains_is_unsupported_and_credits_nobody() -> None:
    evidence = _evidence([0, 0, 9.0, 6.0, 0.3], [2, 3, 4], [(1, 1.0, [4]), (2, 0.0, [2, 3, 4])])

    support = assess(evidence, {2: 0.9})

    assert support.verdict == "unsupported" and support.paid == 0.0
    assert support.relevant_not_supporting == (1,) and support.record_weights == {}  # about it, says too little
    assert combine_supported({2: 0.9}, support).unattributed
    text = explain(combine_supported({2: 0.9}, support), support=support)
    assert text.startswith("No training record supports this answer")


def test_what_the_base_model_already_knew_pays_no_one() -> None:
    # "The capital of France is Paris ." : the base model predicts every content token
    evidence = _evidence([0, 0, 0, 0.4, 0.2], [3, 4], [(7, 1.0, [3, 4])])

    support = assess(evidence, {7: 0.8})

    assert support.verdict == "supported" and support.novelty == 0.0 and support.paid == 0.0
    assert combine_supported({7: 0.8}, support).total == 0


def test_partly_supported_content_pays_only_its_supported_part_and_shares_stay_exact() -> None:
    evidence = _evidence([0, 8.0, 4.0, 8.0, 4.0], [1, 2, 3, 4], [(1, 1.0, [1, 2]), (2, 0.8, [2])])

    support = assess(evidence, {1: 0.3, 2: 0.2, 3: 0.9})

    assert support.verdict == "partly_supported" and support.supported_fraction == 0.5
    result = combine_supported({1: 0.3, 2: 0.2, 3: 0.9}, support)
    assert result.total == Fraction(1, 2)
    assert all(sum(r.by_signal.values()) == r.share for r in result.records)
    assert {r.record_id for r in result.records} == {1, 2}


def test_combine_with_a_paid_fraction_sums_to_it_exactly() -> None:
    result = combine({"gradient": {1: 0.3, 2: 0.2}, "span": {1: 0.5}}, POLICY_V2, paid=0.333333)
    assert result.total == Fraction(333_333_000, SHARE_DENOMINATOR)
    assert combine({"gradient": {1: 0.3}}, POLICY_V2, paid=0.0).unattributed
    with pytest.raises(ValueError):
        combine({"gradient": {1: 0.3}}, POLICY_V2, paid=1.5)


def test_a_record_contributed_by_two_people_splits_its_credit_exactly() -> None:
    result = combine({"gradient": {1: 0.6, 2: 0.3}}, POLICY_V2, paid=0.9)
    owners = {1: (RecordOwner(10, 100, 7), RecordOwner(11, 101, 7)), 2: RecordOwner(12, 102, 8)}

    rollup = roll_up(result, owners)

    shares = dict(rollup.contributors)
    assert shares[100] == shares[101] == result.records[0].share / 2
    assert sum(shares.values()) == result.total
    assert sum(s for _, s in rollup.contributions) == sum(s for _, s in rollup.datanets) == result.total


def test_a_token_goes_to_the_record_with_the_longest_verbatim_span_around_it() -> None:
    from attribution.index import CandidateEvidence, SupportEvidence

    evidence = SupportEvidence(
        surprisal=(0.0, 5.0, 5.0),
        echo=(True, False, False),
        content=(1, 2),
        key_tokens={},
        candidates=(CandidateEvidence(1, 1.0, (1, 2), (3, 3)), CandidateEvidence(2, 1.0, (2,), (2,))),
    )

    support = assess(evidence, {})

    assert dict(support.record_weights) == {1: pytest.approx(1.0)}


def _in_context_evidence(base_logp: list[float], records: list[tuple[int, float, list[int], list[float]]]) -> Any:
    # "Quistrel ." as a value-first answer: content tokens 0-2 ("Qu", "istrel", "."), no record contains them
    # verbatim; each record: (id, relevance, covered tokens, log-probability of each content token in its context)
    from attribution.index import CandidateEvidence, SupportEvidence

    return SupportEvidence(
        surprisal=(9.0, 5.0, 0.5),
        echo=(False, False, False),
        content=(0, 1, 2),
        key_tokens={},
        candidates=tuple(CandidateEvidence(r, rel, tuple(cov), (), tuple(lp)) for r, rel, cov, lp in records),
        base_logp=tuple(base_logp),
    )


def test_v3_a_record_that_makes_the_answer_likely_in_context_supports_it_and_says_so() -> None:
    evidence = _in_context_evidence(
        [-9.0, -5.0, -0.5], [(1, 1.0, [], [-0.4, -0.1, -0.4]), (2, 1.0, [], [-8.0, -5.2, -0.5])]
    )

    v2, v3 = assess(evidence, {1: 0.5}, POLICY_V2), assess(evidence, {1: 0.5}, POLICY_V3_IN_CONTEXT)

    assert v2.verdict == "unsupported"  # v2 reads no in-context evidence
    assert v3.verdict == "supported" and v3.paid == pytest.approx(14.0 / 14.5, abs=1e-6)
    assert dict(v3.record_weights) == {1: pytest.approx(14.0 / 14.5)}  # "." is not raised: not supported
    assert v3.as_dict()["supported_tokens"] == [[0, "in_context", [1]], [1, "in_context", [1]]]
    assert v3.as_dict()["support_signals"] == {"in_context": pytest.approx(14.0 / 14.5, abs=1e-6)}
    assert "in other words" in v3.reason and "support_signals" not in v2.as_dict()
    result = combine_supported({1: 0.5}, v3, POLICY_V3_IN_CONTEXT)
    assert result.policy_version == 3 and result.total == Fraction(
        round(v3.paid * SHARE_DENOMINATOR), SHARE_DENOMINATOR
    )


def test_v3_a_record_that_states_another_value_lowers_the_answer_and_supports_nothing() -> None:
    evidence = _in_context_evidence([-9.0, -5.0, -0.5], [(1, 1.0, [], [-12.0, -6.0, -0.4])])

    support = assess(evidence, {1: 0.9}, POLICY_V3_IN_CONTEXT)

    assert support.verdict == "unsupported" and support.record_weights == {} and support.relevant_not_supporting == (1,)


def test_v3_in_context_support_needs_a_gain_a_likely_token_and_a_relevant_record() -> None:
    small_gain = _in_context_evidence([-1.0, -1.0, -0.5], [(1, 1.0, [], [-0.5, -0.5, -0.5])])
    still_unlikely = _in_context_evidence([-9.0, -8.0, -0.5], [(1, 1.0, [], [-4.0, -3.0, -0.5])])
    not_about_it = _in_context_evidence([-9.0, -5.0, -0.5], [(1, 0.2, [], [-0.4, -0.1, -0.4])])

    for evidence in (small_gain, still_unlikely, not_about_it):
        assert assess(evidence, {}, POLICY_V3_IN_CONTEXT).verdict == "unsupported"


def test_v3_verbatim_support_wins_over_in_context_and_the_best_gain_takes_the_rest() -> None:
    evidence = _in_context_evidence(
        [-9.0, -5.0, -0.5],
        [(1, 1.0, [0], [-3.0, -0.2, -0.4]), (2, 1.0, [], [-0.1, -0.9, -0.4]), (3, 1.0, [], [-0.1, -0.2, -0.4])],
    )

    support = assess(evidence, {}, POLICY_V3_IN_CONTEXT)

    by = support.supported_by
    assert by[0] == ("span", (1,))  # record 1 contains it verbatim; 2 and 3 raise it more but do not count
    assert by[1] == ("in_context", (1, 3))  # equal best gains share the token
    assert support.signal_weights == {"span": pytest.approx(9 / 14.5), "in_context": pytest.approx(5 / 14.5)}


def test_v3_a_word_a_record_supports_in_part_and_raises_throughout_is_supported_whole() -> None:
    # " qu", "istrel" is one word: its record makes "istrel" near certain and raises " qu" by 5 nats, to only e^-7
    from dataclasses import replace

    raised = _in_context_evidence([-9.0, -5.0, -0.5], [(1, 1.0, [], [-4.0, -0.1, -0.4])])
    barely = _in_context_evidence([-9.0, -5.0, -0.5], [(1, 1.0, [], [-8.0, -0.1, -0.4])])
    words = (True, False, True)

    whole = assess(replace(raised, word_start=words), {}, POLICY_V3_IN_CONTEXT)
    part = assess(replace(barely, word_start=words), {}, POLICY_V3_IN_CONTEXT)
    no_words = assess(raised, {}, POLICY_V3_IN_CONTEXT)

    assert whole.supported_by[0] == ("in_context", (1,)) and whole.verdict == "supported"
    assert 0 not in part.supported_by and 0 not in no_words.supported_by


def test_v3_a_record_about_the_question_that_has_the_answers_word_in_another_casing_supports_it() -> None:
    # "Amber ." for a record that says "... is amber.": no n-gram of the answer is in the record, its word is
    from attribution.index import CandidateEvidence, SupportEvidence

    def evidence(relevance: float) -> Any:
        return SupportEvidence(
            surprisal=(9.0, 0.5),
            echo=(False, False),
            content=(0, 1),
            key_tokens={},
            candidates=(CandidateEvidence(1, relevance, (1,), (2,), same_word=(0,)),),
        )

    v2, v3 = assess(evidence(1.0), {}, POLICY_V2), assess(evidence(1.0), {}, POLICY_V3)
    other_entity = assess(evidence(0.2), {}, POLICY_V3)

    assert v2.verdict == "unsupported"  # v2 reads only verbatim n-grams
    assert v3.verdict == "supported" and v3.supported_by[0] == ("word", (1,))
    assert v3.signal_weights == {"word": pytest.approx(9 / 9.5), "span": pytest.approx(0.5 / 9.5)}
    assert other_entity.verdict == "unsupported"  # the same word in a record about something else supports nothing


def test_v3_verbatim_support_wins_over_a_bare_word_and_a_word_over_the_in_context_test() -> None:
    from attribution.index import CandidateEvidence, SupportEvidence

    evidence = SupportEvidence(
        surprisal=(9.0, 5.0),
        echo=(False, False),
        content=(0, 1),
        key_tokens={},
        candidates=(
            CandidateEvidence(1, 1.0, (0,), (3,), (-0.1, -0.1)),
            CandidateEvidence(2, 1.0, (), (), (-0.1, -0.1), same_word=(0, 1)),
            CandidateEvidence(3, 1.0, (), (), (-0.01, -0.01)),
        ),
        base_logp=(-9.0, -5.0),
    )

    by = assess(evidence, {}, POLICY_V3_IN_CONTEXT).supported_by

    assert by[0] == ("span", (1,)) and by[1] == ("word", (2,))


def test_token_words_joins_a_word_split_across_tokens_in_any_casing() -> None:
    from attribution.index import token_words

    words = token_words(["Am", "ber", ".", " Quel", "mar", " 5", ",", "830"])

    assert words == [
        {"amber"},
        {"amber"},
        set(),
        {"quelmar"},
        {"quelmar"},
        {"5"},
        set(),
        {"830"},
    ]

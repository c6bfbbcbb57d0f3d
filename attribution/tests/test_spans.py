from __future__ import annotations

import numpy as np
import pytest

from attribution import spans
from attribution.spans import SpanIndex, SpanIndexError, span_record_scores


def _occurs_in(needle: list[int], haystack: list[int]) -> list[int]:
    n = len(needle)
    return [i for i in range(len(haystack) - n + 1) if haystack[i : i + n] == needle]


def _brute_force(records: dict[int, list[int]], query: list[int], min_tokens: int) -> list[tuple[int, int, dict]]:
    """Maximal spans by definition: [s, e) occurs in some record, [s-1, e) and [s, e+1) do not."""

    def where(span: list[int]) -> dict[int, list[int]]:
        return {rid: offs for rid, toks in records.items() if (offs := _occurs_in(span, toks))}

    spans = []
    for s in range(len(query)):
        for e in range(s + min_tokens, len(query) + 1):
            found = where(query[s:e])
            if not found:
                break
            left = s > 0 and where(query[s - 1 : e])
            right = e < len(query) and where(query[s : e + 1])
            if not left and not right:
                spans.append((s, e, found))
    return spans


@pytest.mark.parametrize("gather_below", [0, 2048])  # 0: every narrowing step is a scalar binary search
@pytest.mark.parametrize("seed", range(8))
def test_spans_match_a_brute_force_search_on_random_tokens(seed: int, gather_below: int, monkeypatch) -> None:
    monkeypatch.setattr(spans, "_GATHER_BELOW", gather_below)
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(2, 6))  # a tiny vocabulary makes many repeats, the hard case for a suffix array
    records = {int(rid): rng.integers(0, vocab, int(rng.integers(0, 30))).tolist() for rid in rng.permutation(40)[:15]}
    index = SpanIndex.build(records.items())
    for _ in range(5):
        source = records[int(rng.choice(list(records)))]
        query = rng.integers(0, vocab, 12).tolist() + source[:20] + rng.integers(0, vocab, 5).tolist()
        min_tokens = int(rng.integers(1, 6))

        matches = index.find_spans(query, min_tokens=min_tokens, max_records=1000)

        expected = _brute_force(records, query, min_tokens)
        assert [(m.answer_start, m.answer_end) for m in matches] == [(s, e) for s, e, _ in expected]
        for match, (_, _, found) in zip(matches, expected, strict=True):
            assert {r.record_id: list(r.offsets) for r in match.records} == found
            assert match.n_records == len(found)
            assert match.n_occurrences == sum(len(o) for o in found.values())


def test_a_span_never_crosses_a_record_boundary() -> None:
    index = SpanIndex.build([(1, [5, 6, 7, 8]), (2, [9, 10, 11, 12])])

    matches = index.find_spans([7, 8, 9, 10], min_tokens=2)

    assert [(m.answer_start, m.answer_end, m.records[0].record_id) for m in matches] == [(0, 2, 1), (2, 4, 2)]


def test_a_span_at_the_end_and_start_of_records_is_found_whole() -> None:
    index = SpanIndex.build([(10, [1, 2, 3, 4, 5]), (20, [3, 4, 5, 6]), (30, [])])

    matches = index.find_spans([0, 3, 4, 5, 6, 0], min_tokens=3)

    assert len(matches) == 1
    match = matches[0]
    assert (match.answer_start, match.answer_end) == (1, 5)
    assert [(r.record_id, r.offsets) for r in match.records] == [(20, (0,))]


def test_spans_are_maximal_and_none_contains_another() -> None:
    index = SpanIndex.build([(1, list(range(20))), (2, list(range(10, 30)))])

    matches = index.find_spans(list(range(30)), min_tokens=4)

    assert [(m.answer_start, m.answer_end) for m in matches] == [(0, 20), (10, 30)]


def test_records_are_listed_by_count_then_id_capped_but_counted_in_full() -> None:
    records = [(rid, [7, 8, 9] * (2 if rid % 2 else 1)) for rid in range(1, 8)]
    index = SpanIndex.build(records)

    (match,) = index.find_spans([7, 8, 9], min_tokens=3, max_records=3)

    assert [(r.record_id, r.count) for r in match.records] == [(1, 2), (3, 2), (5, 2)]
    assert match.records[0].offsets == (0, 3)
    assert match.n_records == 7
    assert match.n_occurrences == 11


def test_short_spans_are_ignored() -> None:
    index = SpanIndex.build([(1, [1, 2, 3, 4, 5, 6, 7, 8, 9])])

    assert index.find_spans([1, 2, 3, 99, 4, 5, 6, 7, 8, 9], min_tokens=4)[0].answer_start == 4
    assert index.find_spans([1, 2, 3], min_tokens=4) == []
    assert SpanIndex.build([]).find_spans([1, 2, 3], min_tokens=1) == []


def test_save_and_load_round_trip_and_a_tampered_file_is_refused(tmp_path) -> None:
    rng = np.random.default_rng(3)
    index = SpanIndex.build((rid, rng.integers(0, 50, 40).tolist()) for rid in range(100, 160))
    path = tmp_path / "spans.npz"

    content_hash = index.save(path)
    loaded = SpanIndex.load(path, expected_hash=content_hash)

    assert loaded.content_hash == content_hash == index.content_hash
    query = index.tokens[40 * 3 + 5 : 40 * 3 + 30].tolist()
    assert loaded.find_spans(query) == index.find_spans(query)
    with pytest.raises(SpanIndexError):
        SpanIndex.load(path, expected_hash="0" * 64)
    data = dict(np.load(path))
    data["record_ids"] = data["record_ids"] + 1
    np.savez(tmp_path / "tampered.npz", **data)
    with pytest.raises(SpanIndexError):
        SpanIndex.load(tmp_path / "tampered.npz")


def test_span_scores_split_each_span_between_its_records() -> None:
    index = SpanIndex.build([(1, [1, 2, 3, 4]), (2, [1, 2, 3, 4]), (3, [5, 6, 7, 8])])
    matches = index.find_spans([1, 2, 3, 4, 5, 6, 7, 8, 0, 0], min_tokens=4)

    scores = span_record_scores(matches, answer_length=10)

    assert scores == pytest.approx({1: 0.2, 2: 0.2, 3: 0.4})


def test_tokens_the_answer_copied_from_its_question_are_echo() -> None:
    prompt = [7, 1, 2, 3, 4, 9]  # "What colour is the flag of X ?"
    answer = [5, 2, 3, 4, 8, 6]  # "The flag of X is teal"
    assert spans.echo_mask(answer, prompt, n=3) == [False, True, True, True, False, False]
    assert spans.echo_mask(answer, prompt, n=4) == [False] * 6
    assert spans.echo_mask([2, 3], [1, 2, 3], n=3) == [True, True]  # shorter than n, all in the prompt


def test_a_span_that_only_repeats_the_question_credits_no_record() -> None:
    index = SpanIndex.build([(1, [0, 4, 5, 6, 7]), (2, [1, 2, 3, 4, 9])])
    answer = [1, 2, 3, 4, 5, 6]
    matches = index.find_spans(answer, min_tokens=3)
    echo = [True, True, True, True, False, False]

    with_echo = span_record_scores(matches, len(answer))
    without = span_record_scores(matches, len(answer), echo)

    assert with_echo[2] > 0 and 2 not in without  # record 2 shares only the echoed words
    assert without[1] == pytest.approx(2 / 6)


def test_token_lookups_find_the_records_that_contain_a_token() -> None:
    index = SpanIndex.build([(10, [1, 2, 3]), (11, [3, 3, 4]), (12, [5])])
    assert index.occurrences(3) == 3 and index.occurrences(99) == 0
    assert index.records_with(3) == [10, 11] and index.records_with(99) == []
    assert index.record_tokens(11).tolist() == [3, 3, 4]
    assert index.record_tokens(12).tolist() == [5]
    with pytest.raises(KeyError):
        index.record_tokens(13)


def test_shared_ngrams_mark_the_answer_tokens_a_record_contains() -> None:
    assert spans.shared_ngram_mask([5, 2, 8, 6], [1, 8, 6, 0], n=2) == [False, False, True, True]
    assert spans.shared_ngram_mask([5, 8], [8], n=2) == [False, False]


def test_shared_span_lengths_give_each_token_its_longest_verbatim_span() -> None:
    assert spans.shared_span_lengths([5, 1, 2, 3, 9], [1, 2, 3, 0, 2, 3], n=2) == [0, 3, 3, 3, 0]
    assert spans.shared_span_lengths([1, 9, 2], [1, 2], n=2) == [0, 0, 0]
    assert spans.shared_span_lengths([], [1, 2]) == [] and spans.shared_span_lengths([1, 2], []) == [0, 0]

"""Verbatim span index over tokenized training records (infini-gram style), numpy only.

The records' token ids are concatenated, each record followed by a separator (-1, never a real token id), and a
suffix array over the real-token positions is built by prefix doubling (``O(n log n)`` per doubling round, at most
``log2(longest repeat)`` rounds). A query walks the answer once: for every start position the longest prefix that
occurs in the training data is found by narrowing a suffix-array interval one token at a time (binary search, so
``O(length * log n)``), and the spans that are not contained in their left neighbour's are the maximal ones.

Records keep the ids the caller gave them; mapping ids to contributions and contributors is the caller's business.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SEPARATOR = -1
FORMAT_VERSION = 1
DEFAULT_MIN_TOKENS = 8
DEFAULT_MAX_RECORDS = 100
# Under this many suffixes an interval is narrowed by gathering its tokens and one vectorised searchsorted,
# which beats a Python-level binary search of scalar reads.
_GATHER_BELOW = 2048


class SpanIndexError(ValueError):
    """A span index file that is missing, of another format, or whose content does not match its hash."""


@dataclass(frozen=True)
class SpanRecord:
    """One training record that contains a span: where, and how often."""

    record_id: int
    count: int
    offsets: tuple[int, ...]  # token offsets of the span inside the record, ascending (capped like the records)


@dataclass(frozen=True)
class SpanMatch:
    """A maximal verbatim span of the answer found in the training data.

    ``answer_start``/``answer_end`` are token offsets into the answer (end exclusive). ``records`` lists the records
    that contain it, most occurrences first then by id, capped; ``n_records`` and ``n_occurrences`` are the full
    counts, whatever the cap.
    """

    answer_start: int
    answer_end: int
    n_records: int
    n_occurrences: int
    records: tuple[SpanRecord, ...] = field(default_factory=tuple)

    @property
    def length(self) -> int:
        return self.answer_end - self.answer_start


def _suffix_array(tokens: np.ndarray) -> np.ndarray:
    """Suffix array of the real-token positions of ``tokens`` (separators excluded), by prefix doubling.

    Every separator gets its own rank below all real tokens (in position order), so no repeat runs across a
    record boundary and the rounds stop once the longest repeat inside one record is resolved.
    """
    n = len(tokens)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    is_sep = tokens == SEPARATOR
    n_seps = int(is_sep.sum())
    values = tokens.astype(np.int64) + n_seps
    values[is_sep] = np.arange(n_seps, dtype=np.int64)
    _, rank = np.unique(values, return_inverse=True)
    rank = rank.astype(np.int64).reshape(-1)
    step = 1
    while int(rank.max()) + 1 < n:
        # pair each suffix's rank with the rank `step` further on (0 past the end); ranks stay below n, so the
        # pair packs into one int64 key for n up to ~3e9
        shifted = np.zeros(n, dtype=np.int64)
        shifted[: n - step] = rank[step:] + 1
        key = rank * (n + 1) + shifted
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.concatenate(([0], np.cumsum(sorted_key[1:] != sorted_key[:-1])))
        step *= 2
    order = np.empty(n, dtype=np.int64)
    order[rank] = np.arange(n, dtype=np.int64)
    suffixes = order[~is_sep[order]]
    return suffixes.astype(np.int32 if n < 2**31 else np.int64)


def _content_hash(arrays: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256(f"span-index-v{FORMAT_VERSION}".encode())
    for array in arrays:
        digest.update(str(array.dtype).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class SpanIndex:
    """A suffix array over training records; immutable once built.

    Promises: ``find_spans`` returns every maximal span of at least ``min_tokens`` tokens of the query that occurs
    verbatim inside one record (never across two records), with all the records containing it (listed up to a
    cap, counted in full). ``content_hash`` identifies the tokens, record ids and suffix array.
    """

    def __init__(
        self, tokens: np.ndarray, suffixes: np.ndarray, record_starts: np.ndarray, record_ids: np.ndarray
    ) -> None:
        self.tokens = tokens
        self.suffixes = suffixes
        self.record_starts = record_starts
        self.record_ids = record_ids
        self.content_hash = _content_hash([tokens, suffixes, record_starts, record_ids])
        # the suffix array is sorted by first token: bucket boundaries make the first narrowing step O(log V)
        firsts = tokens[suffixes] if len(suffixes) else np.zeros(0, dtype=tokens.dtype)
        self._first_values, self._first_starts = np.unique(firsts, return_index=True)

    @classmethod
    def build(cls, records: Iterable[tuple[int, Sequence[int]]]) -> SpanIndex:
        """Index ``(record_id, token_ids)`` pairs; token ids must be non-negative, record ids unique integers."""
        ids: list[int] = []
        chunks: list[np.ndarray] = []
        for record_id, token_ids in records:
            chunk = np.asarray(token_ids, dtype=np.int64)
            if chunk.size and int(chunk.min()) < 0:
                raise ValueError(f"record {record_id} has a negative token id")
            ids.append(int(record_id))
            chunks.append(chunk)
        if len(set(ids)) != len(ids):
            raise ValueError("record ids must be unique")
        lengths = np.array([len(c) + 1 for c in chunks], dtype=np.int64)
        record_starts = (
            np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64) if ids else np.zeros(0, np.int64)
        )
        tokens = np.full(int(lengths.sum()), SEPARATOR, dtype=np.int64)
        for start, chunk in zip(record_starts, chunks, strict=True):
            tokens[start : start + len(chunk)] = chunk
        if tokens.size and int(tokens.max()) < 2**31:
            tokens = tokens.astype(np.int32)
        suffixes = _suffix_array(tokens)
        return cls(tokens, suffixes, record_starts, np.array(ids, dtype=np.int64))

    def without(self, record_ids: Iterable[int]) -> SpanIndex:
        """The same index with the tokens of ``record_ids`` gone (an erasure): each keeps its id and its place in
        the record order, with no token, so no span can be found in it; every other record's tokens, and so every
        offset inside a record, stay as they were. Ids that are not indexed are ignored."""
        gone = {int(r) for r in record_ids}
        kept = (
            (int(record_id), [] if int(record_id) in gone else self.record_tokens(int(record_id)).tolist())
            for record_id in self.record_ids
        )
        return SpanIndex.build(kept)

    def holds_tokens(self, record_id: int) -> bool:
        """Whether the index holds any token of ``record_id`` (False for an erased or unindexed record)."""
        try:
            return len(self.record_tokens(record_id)) > 0
        except KeyError:
            return False

    @property
    def n_records(self) -> int:
        return len(self.record_ids)

    @property
    def n_tokens(self) -> int:
        """Real tokens indexed (separators not counted)."""
        return len(self.suffixes)

    def save(self, path: Path) -> str:
        """Write the index to ``path`` (.npz) with its content hash; return the hash."""
        meta = json.dumps({"format": FORMAT_VERSION, "content_hash": self.content_hash})
        with Path(path).open("wb") as f:
            np.savez(
                f,
                tokens=self.tokens,
                suffixes=self.suffixes,
                record_starts=self.record_starts,
                record_ids=self.record_ids,
                meta=np.array(meta),
            )
        return self.content_hash

    @classmethod
    def load(cls, path: Path, *, expected_hash: str | None = None) -> SpanIndex:
        """Read an index saved by ``save``; raise SpanIndexError if its content does not match its (or the
        expected) hash."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                index = cls(data["tokens"], data["suffixes"], data["record_starts"], data["record_ids"])
        except (OSError, KeyError, ValueError) as e:
            raise SpanIndexError(f"cannot read span index {path}: {e}") from e
        if meta.get("format") != FORMAT_VERSION:
            raise SpanIndexError(f"span index {path} has format {meta.get('format')}, expected {FORMAT_VERSION}")
        for wanted in (meta.get("content_hash"), expected_hash):
            if wanted is not None and wanted != index.content_hash:
                raise SpanIndexError(f"span index {path} does not match its hash")
        return index

    def _narrow(self, lo: int, hi: int, depth: int, token: int) -> tuple[int, int]:
        """Within suffixes[lo:hi] (all sharing a prefix of length ``depth``), the sub-interval whose next token is
        ``token``. Those next tokens are sorted, separators (-1) first."""
        if hi - lo <= _GATHER_BELOW:
            nxt = self.tokens[self.suffixes[lo:hi].astype(np.int64) + depth]
            return lo + int(np.searchsorted(nxt, token, "left")), lo + int(np.searchsorted(nxt, token, "right"))
        tokens, suffixes = self.tokens, self.suffixes

        def bound(strict: bool) -> int:
            a, b = lo, hi
            while a < b:
                mid = (a + b) // 2
                value = tokens[suffixes[mid] + depth]
                if value < token or (strict and value == token):
                    a = mid + 1
                else:
                    b = mid
            return a

        return bound(False), bound(True)

    def _longest_match(self, query: Sequence[int], start: int) -> tuple[int, int, int]:
        """Length of the longest prefix of ``query[start:]`` in the index, and its suffix-array interval."""
        first = query[start]
        i = int(np.searchsorted(self._first_values, first))
        if i == len(self._first_values) or self._first_values[i] != first:
            return 0, 0, 0
        lo = int(self._first_starts[i])
        hi = int(self._first_starts[i + 1]) if i + 1 < len(self._first_starts) else len(self.suffixes)
        length = 1
        while start + length < len(query):
            new_lo, new_hi = self._narrow(lo, hi, length, query[start + length])
            if new_lo == new_hi:
                break
            lo, hi, length = new_lo, new_hi, length + 1
        return length, lo, hi

    def occurrences(self, token: int) -> int:
        """How many times ``token`` occurs in the indexed records: O(log vocabulary)."""
        i = int(np.searchsorted(self._first_values, token))
        if i == len(self._first_values) or self._first_values[i] != token:
            return 0
        end = int(self._first_starts[i + 1]) if i + 1 < len(self._first_starts) else len(self.suffixes)
        return end - int(self._first_starts[i])

    def records_with(self, token: int, *, limit: int = 1000) -> list[int]:
        """Ids of the records that contain ``token`` (at most ``limit`` occurrences are looked at)."""
        i = int(np.searchsorted(self._first_values, token))
        if i == len(self._first_values) or self._first_values[i] != token:
            return []
        start = int(self._first_starts[i])
        end = int(self._first_starts[i + 1]) if i + 1 < len(self._first_starts) else len(self.suffixes)
        positions = np.sort(self.suffixes[start : min(end, start + limit)].astype(np.int64))
        which = np.unique(np.searchsorted(self.record_starts, positions, "right") - 1)
        return [int(r) for r in self.record_ids[which]]

    def record_tokens(self, record_id: int) -> np.ndarray:
        """The token ids of one indexed record (KeyError for an id that is not indexed)."""
        where = np.flatnonzero(self.record_ids == record_id)
        if len(where) == 0:
            raise KeyError(record_id)
        start = int(self.record_starts[where[0]])
        end = (
            int(self.record_starts[where[0] + 1]) - 1
            if where[0] + 1 < len(self.record_starts)
            else len(self.tokens) - 1
        )
        return self.tokens[start:end]

    def find_spans(
        self, query: Sequence[int], *, min_tokens: int = DEFAULT_MIN_TOKENS, max_records: int = DEFAULT_MAX_RECORDS
    ) -> list[SpanMatch]:
        """Maximal spans of ``query`` (token ids) of at least ``min_tokens`` tokens found verbatim in one record.

        Spans are returned in answer order; two returned spans may overlap but neither contains the other.
        """
        if min_tokens < 1:
            raise ValueError("min_tokens must be at least 1")
        query = [int(t) for t in query]
        matches: list[SpanMatch] = []
        previous = 0
        for start in range(len(query)):
            if query[start] < 0 or len(self.suffixes) == 0:
                previous = 0
                continue
            length, lo, hi = self._longest_match(query, start)
            # L(start) >= L(start-1) - 1 always; equality means this span sits inside the previous one
            contained = previous > 0 and length == previous - 1
            previous = length
            if length >= min_tokens and not contained:
                matches.append(self._match(start, length, lo, hi, max_records))
        return matches

    def _match(self, start: int, length: int, lo: int, hi: int, max_records: int) -> SpanMatch:
        positions = np.sort(self.suffixes[lo:hi].astype(np.int64))
        which = np.searchsorted(self.record_starts, positions, "right") - 1
        offsets = positions - self.record_starts[which]
        record_index, first, counts = np.unique(which, return_index=True, return_counts=True)
        ids = self.record_ids[record_index]
        order = np.lexsort((ids, -counts))[:max_records]
        records = tuple(
            SpanRecord(
                record_id=int(ids[j]),
                count=int(counts[j]),
                offsets=tuple(int(o) for o in offsets[first[j] : first[j] + counts[j]][:max_records]),
            )
            for j in order
        )
        return SpanMatch(
            answer_start=start,
            answer_end=start + length,
            n_records=len(record_index),
            n_occurrences=hi - lo,
            records=records,
        )


def span_record_scores(
    matches: Sequence[SpanMatch], answer_length: int, echo: Sequence[bool] | None = None
) -> dict[int, float]:
    """Span-signal score of each listed record: the answer fraction its spans cover, each span's credit split
    equally between all the records that contain it (a boilerplate span in 1,000 records credits each little).

    With ``echo`` (one flag per answer token, ``echo_mask``), tokens the answer copied from its prompt count for
    nothing: a span that only repeats the question credits no record.

    The scores sum to at most the spans' total length over the answer's (less where a record beyond the listing
    cap goes uncredited).
    """
    scores: dict[int, float] = {}
    if answer_length <= 0:
        return scores
    for match in matches:
        length = match.length
        if echo is not None:
            length = sum(1 for i in range(match.answer_start, match.answer_end) if i < len(echo) and not echo[i])
        if length == 0:
            continue
        credit = length / answer_length / match.n_records
        for record in match.records:
            scores[record.record_id] = scores.get(record.record_id, 0.0) + credit
    return scores


def echo_mask(answer_ids: Sequence[int], prompt_ids: Sequence[int], *, n: int = 3) -> list[bool]:
    """For each answer token, whether it lies inside an ``n``-gram (``n`` tokens or more) that also occurs in the
    prompt: the answer repeating its question ("The flag of X is"), which no training record taught it.

    An answer shorter than ``n`` tokens that occurs in the prompt as a whole is all echo too.
    """
    answer = [int(t) for t in answer_ids]
    prompt = [int(t) for t in prompt_ids]
    width = min(n, len(answer))
    mask = [False] * len(answer)
    if width == 0 or len(prompt) < width:
        return mask
    grams = {tuple(prompt[i : i + width]) for i in range(len(prompt) - width + 1)}
    for i in range(len(answer) - width + 1):
        if tuple(answer[i : i + width]) in grams:
            for j in range(i, i + width):
                mask[j] = True
    return mask


def shared_ngram_mask(answer_ids: Sequence[int], record_ids: Sequence[int], *, n: int = 2) -> list[bool]:
    """For each answer token, whether it lies inside an ``n``-gram of the answer that occurs verbatim in the record."""
    return [length > 0 for length in shared_span_lengths(answer_ids, record_ids, n=n)]


def shared_span_lengths(answer_ids: Sequence[int], record_ids: Sequence[int], *, n: int = 2) -> list[int]:
    """For each answer token, the length of the longest span of the answer that contains it and occurs verbatim in
    the record, or 0 when that is shorter than ``n`` tokens. A sparse longest-common-suffix table: only the record
    positions holding each answer token are visited, so the cost follows the overlap, not the record's length."""
    answer = [int(t) for t in answer_ids]
    where: dict[int, list[int]] = {}
    for j, token in enumerate(int(t) for t in record_ids):
        where.setdefault(token, []).append(j)
    ends = [0] * len(answer)  # longest match ending at each answer position
    previous: dict[int, int] = {}
    for i, token in enumerate(answer):
        current = {j: previous.get(j - 1, 0) + 1 for j in where.get(token, ())}
        ends[i] = max(current.values(), default=0)
        previous = current
    lengths = [0] * len(answer)
    for i, length in enumerate(ends):
        if length < n:
            continue
        for k in range(i - length + 1, i + 1):
            lengths[k] = max(lengths[k], length)
    return lengths

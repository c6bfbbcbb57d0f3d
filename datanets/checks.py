"""The automatic checks a contribution gets after submit, each leaving its evidence in ``contribution.checks``.

Checks never change a contribution's status: they inform curators. Each check's entry has a ``status`` (``pass``,
``warn``, ``fail`` (a secret found) or ``skipped``), counts, and up to ``EXAMPLES_KEPT`` examples naming record ids
and, for flagged text, spans as character offsets into the record's canonical JSON. Every flagged record also
carries its flags in ``Record.flags``: spans for personal data and secrets, whole-record flags for duplicates and
near-duplicates. Found personal data and secrets are never copied into the evidence: examples show a masked excerpt.
The quality score and every threshold are documented in docs/datanets.md.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import numpy as np
from celery import current_app
from django.db import connection, transaction
from django.utils import timezone

from . import language as languages
from .models import Contribution, Record
from .staging import contribution_records_settle, contribution_records_settle_in_steps

logger = logging.getLogger(__name__)

SHORT_RECORD_WORDS: Final = 3
LONG_RECORD_WORDS: Final = 4_096
EXAMPLES_KEPT: Final = 10
HASH_BATCH: Final = 5_000
UPDATE_BATCH: Final = 2_000

MINHASH_PERMUTATIONS: Final = 64
LSH_BANDS: Final = 16  # 16 bands of 4 rows: a pair at Jaccard 0.85 becomes a candidate with p > 0.99
LSH_ROWS: Final = MINHASH_PERMUTATIONS // LSH_BANDS
MINHASH_SEED: Final = 20_240_601
SHINGLE_WORDS: Final = 3
_MERSENNE_61: Final = np.uint64((1 << 61) - 1)

SCORE_WEIGHTS: Final = {
    "bad_rows": 25,
    "duplicates": 20,
    "near_duplicates": 10,
    "length": 10,
    "personal_data": 15,
    "secrets": 20,
    "language": 10,
}


# MinHash and LSH


class MinHasher:
    """MinHash signatures over lowercase word ``SHINGLE_WORDS``-grams, with seeded universal hashing
    ``(a * x + b) mod (2**61 - 1)`` over each shingle's CRC-32: the same text always has the same signature, on
    every machine and in every process (Python's own ``hash`` is salted per process)."""

    def __init__(self, permutations: int = MINHASH_PERMUTATIONS, seed: int = MINHASH_SEED) -> None:
        rng = np.random.default_rng(seed)
        # a, b < 2**31 and x < 2**32 keep a*x + b below 2**64: no overflow in uint64
        self._a = rng.integers(1, 1 << 31, size=(permutations, 1), dtype=np.uint64)
        self._b = rng.integers(0, 1 << 31, size=(permutations, 1), dtype=np.uint64)
        self.permutations = permutations

    @staticmethod
    def shingles(text: str) -> set[str]:
        words = re.findall(r"\w+", text.lower())
        if len(words) <= SHINGLE_WORDS:
            return {" ".join(words)} if words else set()
        return {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)}

    def signature(self, text: str) -> np.ndarray:
        shingles = self.shingles(text)
        if not shingles:
            return np.full(self.permutations, np.iinfo(np.uint32).max, dtype=np.uint32)
        x = np.fromiter((zlib.crc32(s.encode()) for s in shingles), dtype=np.uint64, count=len(shingles))
        hashed = (self._a * x[None, :] + self._b) % _MERSENNE_61
        return (hashed.min(axis=1) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def band_keys(signature: np.ndarray) -> list[bytes]:
    """One bucket key per band: the band number and the band's bytes."""
    raw = signature.astype("<u4").tobytes()
    width = LSH_ROWS * 4
    return [bytes([band]) + raw[band * width : (band + 1) * width] for band in range(LSH_BANDS)]


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The estimated Jaccard similarity: the share of signature positions that agree."""
    return float(np.count_nonzero(a == b)) / len(a)


def signature_from_bytes(raw: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(raw), dtype="<u4").astype(np.uint32)


# Text


def record_text(canonical: str) -> str:
    """The record's text values joined by newlines (keys and chat roles left out): what people wrote."""
    parts: list[str] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, str):
            if key != "role":
                parts.append(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(canonical))
    return "\n".join(parts)


_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.)")


def scannable(canonical: str) -> str:
    """``canonical`` with each JSON escape (``\\n``, ``\\"``, ``\\u00e9``...) blanked to as many spaces: patterns
    then don't read ``\\nbob@x.org`` as ``nbob@x.org``, and offsets stay offsets into the canonical text."""
    return _ESCAPE.sub(lambda m: " " * len(m.group()), canonical)


# Personal data and secrets

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w])")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){2,5}(?![\w])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
SECRET_PATTERNS: Final = {
    "aws_access_key": re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])"),
    "github_token": re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    "slack_token": re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}"),
    "openai_key": re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}"),
    "private_key_pem": re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----)?", re.DOTALL
    ),
    "eth_private_key": re.compile(r"(?<![0-9A-Za-z])(?:0x)?[0-9a-fA-F]{64}(?![0-9A-Za-z])"),
}
PERSONAL_KINDS: Final = ("email", "phone", "card_number")
# Flags on a whole record rather than a span of it (``start``/``end`` absent): the record repeats another one
# (``other_record_id``), exactly or nearly (``similarity``). The record viewer filters and pairs records by them.
DUPLICATE_FLAG: Final = "duplicate"
NEAR_DUPLICATE_FLAG: Final = "near_duplicate"


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_sensitive(canonical: str) -> list[dict[str, Any]]:
    """Spans of personal data and secrets in ``canonical``: ``{"kind", "start", "end"}``, sorted by start.

    Card numbers need 13-19 digits and a valid Luhn sum; phone numbers 9-15 digits in at least three groups (or a
    leading ``+``) and no overlap with a card number; a 64-hex-digit string is flagged as a possible Ethereum private
    key even though hashes look the same: a curator tells them apart.
    """
    text = scannable(canonical)
    spans: list[dict[str, Any]] = []
    for match in _EMAIL.finditer(text):
        spans.append({"kind": "email", "start": match.start(), "end": match.end()})
    cards: list[tuple[int, int]] = []
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            cards.append((match.start(), match.end()))
            spans.append({"kind": "card_number", "start": match.start(), "end": match.end()})
    for match in _PHONE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if not 9 <= len(digits) <= 15 or any(s < match.end() and match.start() < e for s, e in cards):
            continue
        spans.append({"kind": "phone", "start": match.start(), "end": match.end()})
    for kind, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            spans.append({"kind": kind, "start": match.start(), "end": match.end()})
    spans.sort(key=lambda s: (s["start"], s["end"]))
    return spans


def _masked(canonical: str, span: dict[str, Any]) -> str:
    found = canonical[span["start"] : span["end"]]
    return found[:4] + "…" if len(found) > 4 else "…"


# The run


@dataclass
class _Row:
    id: int
    position: int
    line: int
    canonical: str
    record_hash: str
    words: int
    source: str = ""
    signature: np.ndarray | None = None
    flags: list[dict[str, Any]] = field(default_factory=list)


def _rows(contribution: Contribution) -> Iterator[_Row]:
    values = (
        Record.objects.filter(contribution=contribution)
        .order_by("position")
        .values_list("id", "position", "line", "canonical", "record_hash", "words", "source")
    )
    for row in values.iterator(chunk_size=2_000):
        yield _Row(*row)


def _example(row: _Row, **extra: Any) -> dict[str, Any]:
    return {"record_id": row.id, "position": row.position, "line": row.line, **extra}


def _record_flag(kind: str, other_record_id: int, **extra: Any) -> dict[str, Any]:
    """A flag on the whole record (no span), naming the other record it repeats."""
    return {"kind": kind, "other_record_id": other_record_id, **extra}


def _status(count: int) -> str:
    return "warn" if count else "pass"


def _schema(contribution: Contribution) -> dict[str, Any]:
    codes = Counter(e["code"] for e in contribution.parse_errors if e.get("code") != "duplicate")
    return {
        "status": _status(contribution.error_count),
        "bad_rows": contribution.error_count,
        "policy": contribution.bad_rows,
        "by_code": dict(codes),
        "examples": [e for e in contribution.parse_errors if e.get("code") != "duplicate"][:EXAMPLES_KEPT],
    }


def _length(rows: list[_Row]) -> dict[str, Any]:
    found: dict[str, list[_Row]] = {"empty": [], "too_short": [], "too_long": []}
    for row in rows:
        if row.words == 0:
            found["empty"].append(row)
        elif row.words < SHORT_RECORD_WORDS:
            found["too_short"].append(row)
        elif row.words > LONG_RECORD_WORDS:
            found["too_long"].append(row)
    total = sum(len(v) for v in found.values())
    return {
        "status": _status(total),
        "min_words": SHORT_RECORD_WORDS,
        "max_words": LONG_RECORD_WORDS,
        **{kind: len(matches) for kind, matches in found.items()},
        "examples": [_example(row, kind=kind, words=row.words) for kind, matches in found.items() for row in matches][
            :EXAMPLES_KEPT
        ],
    }


_DUPLICATE_OF = re.compile(r"duplicate of (?:(?P<source>.+) )?\w+ (?P<line>\d+)$")


def _within_duplicate(error: dict[str, Any], rows: list[_Row]) -> dict[str, Any]:
    """A repeated row left out of the upload (it is no record), with ``other_record_id``: the record kept from the
    row it repeats, found by the source and line its message names."""
    example = {"kind": "within", **error}
    found = _DUPLICATE_OF.search(error.get("message", ""))
    if found:
        source, line = found["source"] or error.get("source", ""), int(found["line"])
        twin = next((row for row in rows if row.line == line and row.source == source), None)
        if twin is not None:
            example["other_record_id"] = twin.id
    return example


def _exact_duplicates(contribution: Contribution, rows: list[_Row]) -> dict[str, Any]:
    by_hash = {row.record_hash: row for row in rows}
    hashes = list(by_hash)
    others = Record.objects.filter(datanet_id=contribution.datanet_id).exclude(contribution=contribution)
    against: dict[str, dict[int, int]] = {"accepted": {}, "pending": {}}  # record id -> the other record's id
    other_contribution: dict[int, int] = {}
    for start in range(0, len(hashes), HASH_BATCH):
        chunk = hashes[start : start + HASH_BATCH]
        matches = (
            others.filter(
                record_hash__in=chunk,
                contribution__status__in=[Contribution.Status.ACCEPTED, Contribution.Status.PENDING],
            )
            .order_by("id")
            .values_list("record_hash", "id", "contribution_id", "contribution__status", "excluded")
        )
        for record_hash, other_id, other_contribution_id, status, excluded in matches:
            if status == Contribution.Status.ACCEPTED and excluded:
                continue  # excluded records are in no snapshot: repeating one duplicates nothing
            row = by_hash[record_hash]
            if row.id not in against[status]:
                against[status][row.id] = other_id
                other_contribution[other_id] = other_contribution_id
    within = [e for e in contribution.parse_errors if e.get("code") == "duplicate"]
    by_id = {row.id: row for row in rows}
    for found in against.values():
        for row_id, other_id in found.items():
            by_id[row_id].flags.append(_record_flag(DUPLICATE_FLAG, other_id))
    examples = [_within_duplicate(e, rows) for e in within[: EXAMPLES_KEPT // 2]]
    for kind, found in against.items():
        for row_id, other_id in list(found.items())[: EXAMPLES_KEPT // 2]:
            examples.append(
                _example(
                    by_id[row_id],
                    kind=kind,
                    other_record_id=other_id,
                    other_contribution_id=other_contribution[other_id],
                )
            )
    total = contribution.duplicate_row_count + len(against["accepted"]) + len(against["pending"])
    return {
        "status": _status(total),
        "within_contribution": contribution.duplicate_row_count,
        "against_accepted": len(against["accepted"]),
        "against_pending": len(against["pending"]),
        "records_duplicated": len(set(against["accepted"]) | set(against["pending"])),
        "examples": examples[:EXAMPLES_KEPT],
    }


def _near_duplicates(contribution: Contribution, rows: list[_Row], hasher: MinHasher) -> dict[str, Any]:
    threshold = contribution.datanet.near_duplicate_threshold
    buckets: dict[bytes, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        row.signature = hasher.signature(record_text(row.canonical))
        for key in band_keys(row.signature):
            buckets[key].append(index)
    within: dict[int, tuple[int, float]] = {}
    for members in buckets.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                if b in within or rows[a].record_hash == rows[b].record_hash:
                    continue
                score = similarity(rows[a].signature, rows[b].signature)  # type: ignore[arg-type]
                if score >= threshold:
                    within[b] = (a, score)  # the later record is the near-copy of the earlier one
    against: dict[int, tuple[int, float]] = {}
    accepted = Record.objects.filter(
        datanet_id=contribution.datanet_id, contribution__status=Contribution.Status.ACCEPTED, excluded=False
    ).order_by()
    hashes = {row.record_hash for row in rows}

    def probe(other_id: int, record_hash: str, signature: np.ndarray) -> None:
        if record_hash in hashes:
            return  # an exact duplicate, reported by that check
        for key in band_keys(signature):
            for index in buckets.get(key, ()):
                if index in against:
                    continue
                score = similarity(rows[index].signature, signature)  # type: ignore[arg-type]
                if score >= threshold:
                    against[index] = (other_id, score)

    for other_id, record_hash, raw in (
        accepted.filter(minhash__isnull=False).values_list("id", "record_hash", "minhash").iterator(chunk_size=5_000)
    ):
        probe(other_id, record_hash, signature_from_bytes(raw))
    # accepted records never checked here (loaded by other means) get their signature now, not stored: they're frozen
    for other_id, record_hash, canonical in (
        accepted.filter(minhash__isnull=True).values_list("id", "record_hash", "canonical").iterator(chunk_size=2_000)
    ):
        probe(other_id, record_hash, hasher.signature(record_text(canonical)))
    examples = [
        _example(rows[i], kind="within", other_record_id=rows[j].id, similarity=round(s, 3))
        for i, (j, s) in list(within.items())[: EXAMPLES_KEPT // 2]
    ] + [
        _example(rows[i], kind="accepted", other_record_id=other, similarity=round(s, 3))
        for i, (other, s) in list(against.items())[: EXAMPLES_KEPT // 2]
    ]
    for index, (other, score) in [(i, (rows[j].id, s)) for i, (j, s) in within.items()] + list(against.items()):
        rows[index].flags.append(_record_flag(NEAR_DUPLICATE_FLAG, other, similarity=round(score, 3)))
    flagged = set(within) | set(against)
    return {
        "status": _status(len(flagged)),
        "threshold": threshold,
        "method": (
            f"MinHash {MINHASH_PERMUTATIONS} permutations, LSH {LSH_BANDS}x{LSH_ROWS}, word {SHINGLE_WORDS}-grams"
        ),
        "within_contribution": len(within),
        "against_accepted": len(against),
        "records_flagged": len(flagged),
        "examples": examples,
    }


def _sensitive(rows: list[_Row]) -> tuple[dict[str, Any], dict[str, Any]]:
    counts: Counter[str] = Counter()
    personal_records = secret_records = 0
    personal_examples: list[dict[str, Any]] = []
    secret_examples: list[dict[str, Any]] = []
    for row in rows:
        row.flags = find_sensitive(row.canonical)
        if not row.flags:
            continue
        kinds = {span["kind"] for span in row.flags}
        counts.update(span["kind"] for span in row.flags)
        for span in row.flags:
            example = _example(
                row, kind=span["kind"], start=span["start"], end=span["end"], excerpt=_masked(row.canonical, span)
            )
            target = personal_examples if span["kind"] in PERSONAL_KINDS else secret_examples
            if len(target) < EXAMPLES_KEPT:
                target.append(example)
        if kinds & set(PERSONAL_KINDS):
            personal_records += 1
        if kinds - set(PERSONAL_KINDS):
            secret_records += 1
    personal = {
        "status": _status(personal_records),
        "records_flagged": personal_records,
        "counts": {kind: counts[kind] for kind in PERSONAL_KINDS},
        "examples": personal_examples,
    }
    secrets = {
        # a published secret can't be taken back: the one finding that fails, not merely warns
        "status": "fail" if secret_records else "pass",
        "records_flagged": secret_records,
        "counts": {kind: counts[kind] for kind in SECRET_PATTERNS},
        "examples": secret_examples,
    }
    return personal, secrets


def _language(contribution: Contribution, rows: list[_Row]) -> dict[str, Any]:
    declared = contribution.datanet.language
    if not declared:
        return {"status": "skipped", "reason": "the Datanet declares no language"}
    detected: Counter[str] = Counter()
    mismatched: list[tuple[_Row, str, float]] = []
    for row in rows:
        language, probability = languages.identify(record_text(row.canonical))
        detected[language] += 1
        if language not in (languages.UNDETERMINED, declared):  # undetermined is never a mismatch
            mismatched.append((row, language, probability))
    return {
        "status": _status(len(mismatched)),
        "declared": declared,
        "detected": dict(detected),
        "mismatched": len(mismatched),
        "method": languages.METHOD,
        "examples": [
            _example(row, detected=language, confidence=round(probability, 2))
            for row, language, probability in mismatched[:EXAMPLES_KEPT]
        ],
    }


def quality_score(contribution: Contribution, checks: dict[str, dict[str, Any]]) -> int:
    """100 minus weighted shares of the problems found (weights in ``SCORE_WEIGHTS``), clamped to 0..100:
    bad rows and duplicate rows as shares of all rows read; duplicates against the Datanet, near-duplicates,
    too short/long, personal data and language mismatch as shares of records; any secret costs its full weight."""
    records = max(contribution.record_count, 1)
    rows_read = max(contribution.record_count + contribution.error_count + contribution.duplicate_row_count, 1)
    dup = checks["exact_duplicates"]
    length = checks["length"]
    language = checks["language"]
    penalty = (
        SCORE_WEIGHTS["bad_rows"] * contribution.error_count / rows_read
        + SCORE_WEIGHTS["duplicates"]
        * min(contribution.duplicate_row_count / rows_read + dup["records_duplicated"] / records, 1)
        + SCORE_WEIGHTS["near_duplicates"] * checks["near_duplicates"]["records_flagged"] / records
        + SCORE_WEIGHTS["length"] * (length["empty"] + length["too_short"] + length["too_long"]) / records
        + SCORE_WEIGHTS["personal_data"] * checks["personal_data"]["records_flagged"] / records
        + (SCORE_WEIGHTS["secrets"] if checks["secrets"]["records_flagged"] else 0)
        + SCORE_WEIGHTS["language"] * language.get("mismatched", 0) / records
    )
    return max(0, min(100, round(100 - penalty)))


def run_checks(contribution: Contribution) -> tuple[dict[str, Any], list[_Row]]:
    """Run every check on ``contribution``'s records; returns the evidence and the rows with flags and signatures."""
    rows = list(_rows(contribution))
    personal, secrets = _sensitive(rows)  # first: it sets each row's span flags, the duplicate checks add theirs
    checks = {
        "schema": _schema(contribution),
        "length": _length(rows),
        "exact_duplicates": _exact_duplicates(contribution, rows),
        "near_duplicates": _near_duplicates(contribution, rows, MinHasher()),
        "personal_data": personal,
        "secrets": secrets,
        "language": _language(contribution, rows),
    }
    return checks, rows


# What the checks may still scan: a pending contribution, and one accepted before its checks ran (it can't enter a
# snapshot until they have: snapshot_freeze). A rejected or withdrawn one never joins a snapshot.
CHECKED_STATUSES: Final = (Contribution.Status.PENDING, Contribution.Status.ACCEPTED)


def _lock(contribution_id: int) -> Contribution | None:
    # Only the contribution's row, and FOR NO KEY UPDATE: the checks change none of its keys, so a freeze or an upload
    # inserting rows that point at it (a foreign key's KEY SHARE) never waits for them, and they never lock the
    # Datanet. Everything that locks both takes the Datanet first (docs/decisions.md, "One lock order").
    return (
        Contribution.objects.select_for_update(no_key=True, of=("self",))
        .select_related("datanet")
        .filter(pk=contribution_id)
        .first()
    )


def contribution_check(*, contribution_id: int) -> Contribution | None:
    """Run the checks of a pending contribution, or of an accepted one never checked, and store their evidence,
    flags and quality score.

    Idempotent: a contribution already checked, rejected or withdrawn is left as it is (a redelivered message), and
    a rerun after a crash overwrites the same fields. The checks never change a contribution's status; a curator who
    decides while they run keeps the decision, and an accepted contribution still gets its evidence (its row is
    frozen for everything else, so the evidence is written with ``update``).
    """
    if connection.vendor == "sqlite":
        # one write lock for the whole database: a large upload's records move in short steps, not one long one
        staged = Contribution.objects.filter(pk=contribution_id, records_staged=True, status__in=CHECKED_STATUSES)
        if staged.exists():
            contribution_records_settle_in_steps(contribution_id)
    with transaction.atomic():
        contribution = _lock(contribution_id)
        if contribution is None:
            return None
        if contribution.status not in CHECKED_STATUSES or contribution.check_status == Contribution.CheckStatus.DONE:
            return contribution
        # A large upload's records wait in the staging table: indexed now, under the lock, before they are read.
        contribution_records_settle(contribution)
        contribution.check_status = Contribution.CheckStatus.RUNNING
        Contribution.objects.filter(pk=contribution_id).update(check_status=contribution.check_status)
    try:
        checks, rows = run_checks(contribution)
        score = quality_score(contribution, checks)
    except Exception as e:
        logger.exception("checks of contribution %s failed", contribution_id)
        with transaction.atomic():
            failed = _lock(contribution_id)
            if failed is not None and failed.status in CHECKED_STATUSES:
                Contribution.objects.filter(pk=contribution_id).update(
                    check_status=Contribution.CheckStatus.FAILED, checks={"error": f"{type(e).__name__}: {e}"}
                )
        raise
    # The records' evidence in steps of UPDATE_BATCH, each its own short transaction (on SQLite one write transaction
    # is the database's only write lock; a million records in one would stop every other writer). A step is skipped
    # once the contribution was rejected or withdrawn meanwhile; the row is marked done only after the last one.
    for start in range(0, len(rows), UPDATE_BATCH):
        with transaction.atomic():
            locked = _lock(contribution_id)
            if locked is None or locked.status not in CHECKED_STATUSES:
                return locked  # rejected or withdrawn while the checks ran: the evidence no longer changes anything
            updates = [
                Record(id=row.id, flags=row.flags, minhash=row.signature.astype("<u4").tobytes())  # type: ignore[union-attr]
                for row in rows[start : start + UPDATE_BATCH]
            ]
            Record.objects.bulk_update(updates, ["flags", "minhash"], batch_size=UPDATE_BATCH)
    with transaction.atomic():
        locked = _lock(contribution_id)
        if locked is None or locked.status not in CHECKED_STATUSES:
            return locked
        locked.checks = checks
        locked.quality_score = score
        locked.check_status = Contribution.CheckStatus.DONE
        locked.checked_at = timezone.now()
        Contribution.objects.filter(pk=contribution_id).update(
            checks=checks, quality_score=score, check_status=locked.check_status, checked_at=locked.checked_at
        )
        return locked


# A contribution still waiting for its checks after this long lost its message (the broker was down when the upload
# committed, or a queue was purged): the beat task queues it again. Longer than any queue's honest backlog, so a
# contribution is rarely queued twice, and twice is harmless: the check takes the contribution's lock and skips it
# once done.
CHECKS_REQUEUE_AFTER: Final = timedelta(minutes=10)
CHECKS_REQUEUE_MAX: Final = 500
# The checks task's registered name: queued by name, here and in services, since datanets.tasks imports the checks.
CONTRIBUTION_CHECK_TASK: Final = "datanets.tasks.contribution_check_task"


def contributions_checks_requeue(*, older_than: timedelta = CHECKS_REQUEUE_AFTER) -> int:
    """Queue the checks again for pending (or accepted) contributions submitted more than ``older_than`` ago whose
    checks never started (at most ``CHECKS_REQUEUE_MAX`` a call, oldest first); returns how many. A large upload's
    records wait in the staging table until its checks start, and an accepted contribution can't enter a snapshot
    until it is scanned, so a lost message must not leave either there."""
    ids = list(
        Contribution.objects.filter(
            status__in=CHECKED_STATUSES,
            check_status=Contribution.CheckStatus.QUEUED,
            submitted_at__lt=timezone.now() - older_than,
        )
        .order_by("submitted_at", "pk")
        .values_list("pk", flat=True)[:CHECKS_REQUEUE_MAX]
    )
    for contribution_id in ids:
        current_app.send_task(CONTRIBUTION_CHECK_TASK, args=[contribution_id])
    if ids:
        logger.warning("queued the checks again for %d contributions that waited over %s", len(ids), older_than)
    return len(ids)

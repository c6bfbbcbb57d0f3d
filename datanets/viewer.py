"""Reads for the record viewer: which records a user may see, filters, full-text search, keyset pages, and what the
record page shows beside a record (its evidence, its twin, the words that differ).

Every read runs a fixed number of queries whatever the number of records: a page is one query for its rows (their
contribution and contributor joined), one for the count, one for each neighbour that says whether a previous page
exists. Pages are keyset pages by record id (``id > after`` or ``id < before``), never OFFSET: a deep page costs what
the first one does.

Search: PostgreSQL full-text (``websearch_to_tsquery`` on the ``simple`` configuration, so no language's stemming is
imposed on a multilingual Datanet) through the partial GIN index of migration 0006; SQLite FTS5 through the table that
migration keeps. Both hold checked records only (the checks task fills them, so an upload never pays for the index):
a record whose checks have not run yet is not found by a search.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import BooleanField, Q, QuerySet
from django.db.models.expressions import RawSQL

from . import selectors
from .checks import (
    DUPLICATE_FLAG,
    LONG_RECORD_WORDS,
    NEAR_DUPLICATE_FLAG,
    PERSONAL_KINDS,
    SECRET_PATTERNS,
    SHORT_RECORD_WORDS,
    record_text,
)
from .models import Contribution, Datanet, Record, Snapshot

RECORD_PAGE_SIZE = 50
EXCERPT_CHARS = 400

# What the check filter selects: records carrying one of these flags (``Record.flags`` kinds), or for ``length``
# records whose word count is outside the check's bounds, or for ``flagged`` any flag at all.
CHECK_FLAGS: dict[str, tuple[str, ...]] = {
    "personal_data": PERSONAL_KINDS,
    "secrets": tuple(SECRET_PATTERNS),
    "exact_duplicates": (DUPLICATE_FLAG,),
    "near_duplicates": (NEAR_DUPLICATE_FLAG,),
}
CHECK_CHOICES = [
    ("flagged", "any flag"),
    ("near_duplicates", "near-duplicates"),
    ("exact_duplicates", "exact duplicates"),
    ("personal_data", "personal data"),
    ("secrets", "secrets"),
    ("length", "too short or too long"),
]
FLAG_CHOICES = [(kind, kind.replace("_", " ")) for kind in (NEAR_DUPLICATE_FLAG, DUPLICATE_FLAG, *PERSONAL_KINDS)] + [
    (kind, kind.replace("_", " ")) for kind in SECRET_PATTERNS
]
STATUS_CHOICES = [(s, s) for s in ("pending", "accepted", "rejected")]
TWIN_FLAGS = (NEAR_DUPLICATE_FLAG, DUPLICATE_FLAG)


@dataclass(frozen=True)
class RecordFilters:
    """What narrows the list; an empty value does not filter."""

    q: str = ""
    check: str = ""
    flag: str = ""
    contributor: str = ""
    status: str = ""
    excluded: str = ""  # "yes", "no" or ""
    contribution: int | None = None
    snapshot: Snapshot | None = None


@dataclass
class KeysetPage:
    records: list[Record]
    next_after: int | None  # the cursor of the next page (``?after=``), None on the last
    prev_before: int | None  # the cursor of the previous page (``?before=``), None on the first


def records_visible_to(*, user: Any, datanet: Datanet) -> QuerySet[Record]:
    """The Datanet's records ``user`` may read (the caller has checked that they may see the Datanet): all of them for
    its owner and curators; for everyone else the records of accepted contributions that were not excluded (what
    snapshots publish), and the records of their own contributions, whatever their state."""
    records = Record.objects.filter(datanet=datanet)
    if selectors.user_can_curate(user=user, datanet=datanet):
        return records
    published = Q(contribution__status=Contribution.Status.ACCEPTED, excluded=False)
    if getattr(user, "is_authenticated", False):
        return records.filter(published | Q(contribution__contributor_id=user.pk))
    return records.filter(published)


def _flag_q(kinds: tuple[str, ...]) -> Q:
    if connection.vendor == "postgresql":
        q = Q()
        for kind in kinds:
            q |= Q(flags__contains=[{"kind": kind}])  # jsonb @>
        return q
    marks = ", ".join(["%s"] * len(kinds))
    sql = f'EXISTS (SELECT 1 FROM json_each("datanets_record"."flags") WHERE json_extract(json_each.value, \'$.kind\') IN ({marks}))'  # noqa: S608, E501
    return Q(RawSQL(sql, list(kinds), output_field=BooleanField()))  # noqa: S611  values are parameters


def search_condition(query: str) -> Q | None:
    """The full-text condition for ``query`` on this database, or None when it holds no word to look for."""
    words = re.findall(r"\w+", query)
    if not words:
        return None
    if connection.vendor == "postgresql":
        # the expression of the index datanets_record_search, and its condition, so that the planner uses it
        sql = (
            'to_tsvector(\'simple\'::regconfig, ("datanets_record"."canonical")::jsonb) '
            "@@ websearch_to_tsquery('simple'::regconfig, %s)"
        )
        return Q(minhash__isnull=False) & Q(RawSQL(sql, [query], output_field=BooleanField()))  # noqa: S611
    match = " ".join(f'"{word}"' for word in words)  # every word, each quoted: FTS5's own syntax never applies
    sql = '"datanets_record"."id" IN (SELECT rowid FROM datanets_record_fts WHERE datanets_record_fts MATCH %s)'
    return Q(RawSQL(sql, [match], output_field=BooleanField()))  # noqa: S611  the query is a parameter


def records_filtered(records: QuerySet[Record], filters: RecordFilters) -> QuerySet[Record]:
    """``records`` narrowed by every filter set in ``filters``."""
    if filters.contribution is not None:
        records = records.filter(contribution_id=filters.contribution)
    if filters.snapshot is not None:
        records = records.filter(snapshot_leaves__snapshot=filters.snapshot)
    if filters.check == "flagged":
        records = records.exclude(flags=[])
    elif filters.check == "length":
        records = records.filter(Q(words__lt=SHORT_RECORD_WORDS) | Q(words__gt=LONG_RECORD_WORDS))
    elif filters.check in CHECK_FLAGS:
        records = records.filter(_flag_q(CHECK_FLAGS[filters.check]))
    if filters.flag:
        records = records.filter(_flag_q((filters.flag,)))
    if filters.contributor:
        records = records.filter(contribution__contributor__username=filters.contributor)
    if filters.status:
        records = records.filter(contribution__status=filters.status)
    if filters.excluded in ("yes", "no"):
        records = records.filter(excluded=filters.excluded == "yes")
    if filters.q:
        condition = search_condition(filters.q)
        records = records.filter(condition) if condition is not None else records.none()
    return records


def records_page(
    records: QuerySet[Record], *, after: int | None = None, before: int | None = None, size: int | None = None
) -> KeysetPage:
    """One page of ``records`` in id order: the first ``size`` after ``after``, or the last ``size`` before ``before``;
    two queries (the rows, and whether any come before them) whatever the page's depth."""
    size = size or RECORD_PAGE_SIZE
    rows_of = records.select_related("contribution__contributor", "revoked").defer("minhash")
    if before is not None:
        rows = list(rows_of.filter(pk__lt=before).order_by("-pk")[: size + 1])
        more_before = len(rows) > size
        rows = rows[:size][::-1]
        return KeysetPage(rows, rows[-1].pk if rows else None, rows[0].pk if rows and more_before else None)
    if after is not None:
        rows_of = rows_of.filter(pk__gt=after)
    rows = list(rows_of.order_by("pk")[: size + 1])
    more_after = len(rows) > size
    rows = rows[:size]
    earlier = after is not None and bool(rows) and records.filter(pk__lt=rows[0].pk).exists()
    return KeysetPage(rows, rows[-1].pk if rows and more_after else None, rows[0].pk if earlier else None)


def contributor_names(*, user: Any, datanet: Datanet, limit: int = 100) -> list[str]:
    """Up to ``limit`` usernames of the Datanet's contributors whose records ``user`` may see, for the filter's list."""
    contributions = Contribution.objects.filter(datanet=datanet)
    if not selectors.user_can_curate(user=user, datanet=datanet):
        contributions = contributions.filter(status=Contribution.Status.ACCEPTED)
    names = contributions.order_by("contributor__username").values_list("contributor__username", flat=True)
    return list(names.distinct()[:limit])


# The record page


def record_evidence(record: Record) -> list[dict[str, Any]]:
    """What the checks said about this record: each check's examples that name it, labelled for display."""
    found = []
    for name, evidence in (record.contribution.checks or {}).items():
        if not isinstance(evidence, dict):
            continue
        for example in evidence.get("examples", []):
            if isinstance(example, dict) and example.get("record_id") == record.pk:
                fields = [(k.replace("_", " "), v) for k, v in example.items() if k not in ("record_id", "position")]
                found.append({"check": name.replace("_", " "), "status": evidence.get("status", ""), "fields": fields})
    return found


def record_twin_id(record: Record) -> int | None:
    """The id of the record this one repeats, exactly or nearly: from its own flags, else from its contribution's
    check evidence (contributions checked before records carried whole-record flags); None if it repeats none."""
    for flag in record.flags or []:
        if flag.get("kind") in TWIN_FLAGS and flag.get("other_record_id"):
            return int(flag["other_record_id"])
    for name in ("near_duplicates", "exact_duplicates"):
        evidence = (record.contribution.checks or {}).get(name)
        for example in evidence.get("examples", []) if isinstance(evidence, dict) else []:
            if isinstance(example, dict) and example.get("record_id") == record.pk and example.get("other_record_id"):
                return int(example["other_record_id"])
    return None


def _tokens(text: str) -> list[str]:
    return re.findall(r"\S+|\s+", text)


# difflib's matching grows worse than quadratically with the number of pieces when words repeat (a 1 MiB record is
# ~200,000 words: minutes of CPU for one page view), so the diff compares the opening pieces only and says so.
DIFF_MAX_PIECES = 800  # about 400 words and the spaces between them: under 0.1 s even for a ten-word vocabulary


def word_diff(a: str, b: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], bool]:
    """The two texts cut into (text, change) pieces, word by word (difflib): change is "" where both agree, else
    ``removed`` (only in ``a``), ``added`` (only in ``b``) or ``changed``; a template marks them and escapes all.
    Only the first ``DIFF_MAX_PIECES`` pieces of each are compared; the rest follows unmarked, and the third value
    says whether anything was left uncompared."""
    left, right = _tokens(a), _tokens(b)
    cut = max(len(left), len(right)) > DIFF_MAX_PIECES
    out_a: list[tuple[str, str]] = []
    out_b: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(a=left[:DIFF_MAX_PIECES], b=right[:DIFF_MAX_PIECES], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        kind = {"equal": "", "replace": "changed", "delete": "removed", "insert": "added"}[op]
        if i2 > i1:
            out_a.append(("".join(left[i1:i2]), "removed" if op == "delete" else kind))
        if j2 > j1:
            out_b.append(("".join(right[j1:j2]), "added" if op == "insert" else kind))
    for out, rest in ((out_a, left[DIFF_MAX_PIECES:]), (out_b, right[DIFF_MAX_PIECES:])):
        if rest:
            out.append(("".join(rest), ""))
    return out_a, out_b, cut


def record_diff(record: Record, twin: Record) -> tuple[list[tuple[str, str]], list[tuple[str, str]], bool]:
    """The word diff of the two records' text (their string values, keys left out)."""
    return word_diff(record_text(twin.canonical), record_text(record.canonical))


def record_neighbours(records: QuerySet[Record], record: Record) -> tuple[int | None, int | None]:
    """The ids of the records just before and just after ``record`` among ``records`` (two queries)."""
    before = records.filter(pk__lt=record.pk).order_by("-pk").values_list("pk", flat=True).first()
    after = records.filter(pk__gt=record.pk).order_by("pk").values_list("pk", flat=True).first()
    return before, after

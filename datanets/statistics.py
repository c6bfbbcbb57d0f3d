"""What a Datanet (or one of its snapshots) holds, as numbers people can look at: record lengths in words over every
record, tokens and languages over a fixed sample, contributors and licences by records.

Exact where the database can count (records, words, the word-length histogram, contributors, licences: a fixed
number of aggregate queries whatever the size); sampled where each record must be read (tokens and languages): at
most ``SAMPLE_SIZE`` records, spread evenly over the scope by id so that the same data gives the same sample, and the
page says how many were read. Tokens are counted with the bundled base model's tokenizer (``tokenizers``, no torch),
the model most fine-tunes here start from.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache as django_cache
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, Mod
from tokenizers import Tokenizer  # the Rust tokenizer alone: no torch, no transformers in the web process

from . import language
from .checks import record_text
from .models import Contribution, Datanet, Record, Snapshot

SAMPLE_SIZE = 2_000
# Anyone may open a public Datanet's statistics, and each computation scans its records and reads a sample: the
# figures are kept in the cache, a snapshot's for a day (it never changes), the accepted records' for a minute.
SNAPSHOT_CACHE_SECONDS = 86_400
ACCEPTED_CACHE_SECONDS = 60
TOP_CONTRIBUTORS = 10
# Upper bounds of the histogram bins (the last bin is open): words per record, then tokens per record.
WORD_BINS = (10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000)
TOKEN_BINS = (16, 32, 64, 128, 256, 512, 1_024, 2_048, 4_096)


@dataclass(frozen=True)
class Histogram:
    """Counts per bin; ``labels`` name the bins ("<10", "10-19", ..., "5000+")."""

    labels: list[str]
    counts: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "counts": self.counts}

    @property
    def rows(self) -> list[tuple[str, int]]:
        return list(zip(self.labels, self.counts, strict=True))


@dataclass(frozen=True)
class Statistics:
    scope: str  # "accepted records" or "snapshot #N"
    records: int
    words: int
    bytes: int
    contributions: int
    words_histogram: Histogram
    contributors: list[dict[str, Any]]  # {"username", "records"}, most records first; the rest as "others"
    contributor_count: int
    licences: list[dict[str, Any]]  # {"licence", "records"}
    sample_size: int
    tokens_histogram: Histogram | None  # None when the tokenizer is not on this machine
    tokens_sampled: int
    languages: list[dict[str, Any]] = field(default_factory=list)  # {"language", "records"} in the sample

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "records": self.records,
            "words": self.words,
            "bytes": self.bytes,
            "contributions": self.contributions,
            "words_histogram": self.words_histogram.as_dict(),
            "contributors": self.contributors,
            "contributor_count": self.contributor_count,
            "licences": self.licences,
            "sample": {
                "records": self.sample_size,
                "tokens_histogram": self.tokens_histogram.as_dict() if self.tokens_histogram else None,
                "tokens": self.tokens_sampled,
                "tokenizer": tokenizer_name(),
                "languages": self.languages,
            },
        }


def _labels(bins: tuple[int, ...]) -> list[str]:
    labels, low = [], 0
    for high in bins:
        labels.append(f"<{high}" if low == 0 else f"{low}-{high - 1}")
        low = high
    return [*labels, f"{low}+"]


def _bin_filters(column: str, bins: tuple[int, ...]) -> dict[str, Q]:
    filters, low = {}, 0
    for i, high in enumerate(bins):
        filters[f"bin{i}"] = Q(**{f"{column}__gte": low, f"{column}__lt": high})
        low = high
    filters[f"bin{len(bins)}"] = Q(**{f"{column}__gte": low})
    return filters


def _histogram(values: list[int], bins: tuple[int, ...]) -> Histogram:
    counts = [0] * (len(bins) + 1)
    for value in values:
        counts[next((i for i, high in enumerate(bins) if value < high), len(bins))] += 1
    return Histogram(_labels(bins), counts)


def records_of_datanet(datanet: Datanet) -> QuerySet[Record]:
    """What a snapshot frozen now would take: accepted contributions' records that no curator excluded."""
    return Record.objects.filter(datanet=datanet, contribution__status=Contribution.Status.ACCEPTED, excluded=False)


def records_of_snapshot(snapshot: Snapshot) -> QuerySet[Record]:
    return Record.objects.filter(snapshot_leaves__snapshot=snapshot)


@cache
def _tokenizer() -> Any | None:
    path = Path(settings.DEFAULT_BASE_MODEL_DIR) / "tokenizer.json"
    if not path.is_file():
        return None
    return Tokenizer.from_file(str(path))


def tokenizer_name() -> str | None:
    """The bundled base model's name, whose tokenizer counts the tokens (None when it is not on this machine)."""
    if _tokenizer() is None:
        return None
    info = Path(settings.DEFAULT_BASE_MODEL_DIR) / "openledger.json"
    try:
        return str(json.loads(info.read_text())["name"])
    except (OSError, ValueError, KeyError):
        return Path(settings.DEFAULT_BASE_MODEL_DIR).name


def _sample(records: QuerySet[Record], total: int) -> list[str]:
    """Up to SAMPLE_SIZE records' canonical JSON: the whole scope when it is that small, else every k-th id (k =
    total // SAMPLE_SIZE), the same records for the same data. One query; how many came back is what the page says."""
    if total > SAMPLE_SIZE:
        records = records.annotate(id_mod=Mod("id", total // SAMPLE_SIZE)).filter(id_mod=0)
    return list(records.order_by("id").values_list("canonical", flat=True)[:SAMPLE_SIZE])


def statistics(*, records: QuerySet[Record], scope: str) -> Statistics:
    """The numbers of ``records`` (a Datanet's accepted records, or a snapshot's): five aggregate queries and the
    sample's one, whatever the size."""
    totals = records.aggregate(
        records=Count("id"),
        total_words=Coalesce(Sum("words"), 0),
        total_bytes=Coalesce(Sum("size_bytes"), 0),
        contributions=Count("contribution", distinct=True),
        contributor_count=Count("contribution__contributor", distinct=True),
        **{name: Count("id", filter=q) for name, q in _bin_filters("words", WORD_BINS).items()},
    )
    words_histogram = Histogram(_labels(WORD_BINS), [totals[f"bin{i}"] for i in range(len(WORD_BINS) + 1)])
    by_contributor = list(
        records.values("contribution__contributor__username")
        .annotate(records=Count("id"))
        .order_by("-records", "contribution__contributor__username")
    )
    contributors = [
        {"username": row["contribution__contributor__username"], "records": row["records"]}
        for row in by_contributor[:TOP_CONTRIBUTORS]
    ]
    if rest := sum(row["records"] for row in by_contributor[TOP_CONTRIBUTORS:]):
        contributors.append({"username": None, "records": rest, "others": len(by_contributor) - TOP_CONTRIBUTORS})
    licences = [
        {"licence": row["contribution__licence"], "records": row["records"]}
        for row in records.values("contribution__licence").annotate(records=Count("id")).order_by("-records")
    ]
    sample = _sample(records, totals["records"]) if totals["records"] else []
    texts = [record_text(canonical) for canonical in sample]
    tokenizer = _tokenizer()
    tokens_histogram, tokens = None, 0
    if tokenizer is not None and texts:
        counts = [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
        tokens_histogram, tokens = _histogram(counts, TOKEN_BINS), sum(counts)
    languages = Counter(language.identify(text)[0] for text in texts)
    return Statistics(
        scope=scope,
        records=totals["records"],
        words=totals["total_words"],
        bytes=totals["total_bytes"],
        contributions=totals["contributions"],
        words_histogram=words_histogram,
        contributors=contributors,
        contributor_count=totals["contributor_count"],
        licences=licences,
        sample_size=len(sample),
        tokens_histogram=tokens_histogram,
        tokens_sampled=tokens,
        languages=[{"language": lang, "records": n} for lang, n in languages.most_common()],
    )


def of(*, datanet: Datanet, snapshot: Snapshot | None = None) -> Statistics:
    """The statistics the page and the API show: of ``snapshot``, else of the Datanet's accepted records; from the
    cache when they were computed recently (the caller has checked that the user may see them)."""
    key = f"openledger:statistics:{datanet.pk}:{snapshot.number if snapshot is not None else 'accepted'}"
    found = django_cache.get(key)
    if found is None:
        if snapshot is not None:
            found = statistics(records=records_of_snapshot(snapshot), scope=f"snapshot #{snapshot.number}")
        else:
            found = statistics(records=records_of_datanet(datanet), scope="accepted records")
        django_cache.set(key, found, SNAPSHOT_CACHE_SECONDS if snapshot is not None else ACCEPTED_CACHE_SECONDS)
    return found

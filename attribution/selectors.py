"""Proof of Attribution reads: what the ancestry panel shows for a run, and how records are displayed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from django.contrib.auth import get_user_model

from datanets.models import Datanet, Record, SnapshotRecord
from datanets.revocation import ERASED_CANONICAL
from datanets.selectors import primary_addresses, user_can_view
from datanets.storage import media_path

from .index import load_index
from .models import AttributionIndex, RecordAttribution, RunAttribution, SpanMatch
from .scoring import SIGNAL_LABELS, SIGNALS

TOP_RECORDS = 10


ERASED_LABEL = "erased record"


def record_is_erased(record: Record) -> bool:
    """Its bytes were erased (``datanets.revocation``): only its hash, leaf and contributor remain."""
    return record.canonical == ERASED_CANONICAL


def record_display_text(record: Record) -> str:
    """A record as a person reads it (the panel shows this text; span character ranges point into it); empty for
    an erased record."""
    if record_is_erased(record):
        return ""
    data = json.loads(record.canonical)
    if isinstance(data.get("messages"), list):
        return "\n\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in data["messages"])
    parts = [data.get("system"), data.get("prompt"), data.get("response"), data.get("text"), data.get("label")]
    shown = [str(p) for p in parts if isinstance(p, str | int | float) and not isinstance(p, bool)]
    return "\n\n".join(p for p in shown if p)


def locate_in_record(display: str, span_text: str) -> tuple[int, int] | None:
    """Where an answer span's text sits in a record's display text (tokens can carry a leading space the record
    does not have at that point, so the stripped text is tried too); None when it cannot be found."""
    for candidate in (span_text, span_text.strip()):
        if candidate:
            at = display.find(candidate)
            if at >= 0:
                return at, at + len(candidate)
    return None


def highlighted(text: str, ranges: list[tuple[int, int]]) -> list[tuple[str, bool]]:
    """``text`` cut into (piece, is_highlighted) pieces; overlapping ranges merge."""
    merged: list[list[int]] = []
    for start, end in sorted((max(0, s), min(len(text), e)) for s, e in ranges if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    pieces: list[tuple[str, bool]] = []
    at = 0
    for start, end in merged:
        if start > at:
            pieces.append((text[at:start], False))
        pieces.append((text[start:end], True))
        at = end
    if at < len(text) or not pieces:
        pieces.append((text[at:], False))
    return pieces


def percent(share: str | Fraction) -> str:
    value = Fraction(share) if isinstance(share, str) else share
    return f"{float(value) * 100:.1f}%"


@dataclass(frozen=True)
class Reliability:
    """How far to trust this version's attribution: its own self-check (``attribution.selfcheck``), measured with
    n, or "not measured". A benchmark's figures never stand in for a version's measurement."""

    state: str  # measured | timed_out | failed | off | not_measured
    figures: dict[str, Any]
    sentence: str

    @property
    def measured(self) -> bool:
        return self.state in ("measured", "timed_out") and bool(self.figures.get("n"))

    @property
    def verdict_counts(self) -> list[tuple[str, int]]:
        labels = dict(RunAttribution.Verdict.choices)
        return [(str(labels.get(v, v)), int(c)) for v, c in (self.figures.get("verdicts") or {}).items()]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def version_reliability(index: AttributionIndex | None) -> Reliability:
    """The reliability of ``index``'s version as measured by its self-check, said in one sentence with n."""
    figures = dict(index.evaluation or {}) if index is not None else {}
    if figures.get("schema") != "openledger.attribution_selfcheck.v1":
        return Reliability("not_measured", {}, "Reliability: not measured for this version (it has no self-check).")
    status, n = figures.get("status"), int(figures.get("n") or 0)
    if status == "off":
        return Reliability("off", figures, "Reliability: not measured for this version (the self-check was off).")
    if status == "failed" and not n:
        why = figures.get("error") or "unknown error"
        sentence = f"Reliability: not measured for this version (its self-check failed: {why})."
        return Reliability("failed", figures, sentence)
    if not n:
        return Reliability(
            "timed_out" if status == "timed_out" else "not_measured",
            figures,
            f"Reliability: not measured for this version (its self-check attributed no answer within "
            f"{figures.get('time_limit_seconds', 0):.0f} s).",
        )
    right = int(figures.get("n_right") or 0)
    parts = [
        f"on {n} of its own training questions answered by this version ({right} answered as the record says)",
        f"the asked record was credited first for {_pct(figures.get('record_top1'))}",
        f"its contributor ranked first for {_pct(figures.get('owner_top1'))}",
    ]
    if figures.get("owner_share_right") is not None:
        parts.append(f"and got {_pct(figures['owner_share_right'])} of the credit on the right answers")
    if figures.get("unsupported_on_wrong") is not None:
        parts.append(f"{_pct(figures['unsupported_on_wrong'])} of wrong answers were judged unsupported")
    unfinished = " (the self-check ran out of time before its whole sample)" if status == "timed_out" else ""
    state = "timed_out" if status == "timed_out" else "measured"
    return Reliability(state, figures, "Reliability measured on this version: " + ", ".join(parts) + unfinished + ".")


@dataclass
class PanelRecord:
    row: RecordAttribution
    record: Record
    text: list[tuple[str, bool]]
    visible: bool
    proof: SnapshotRecord | None
    signals: list[tuple[str, str]]
    share: str
    erased: bool = False  # its text is gone: the panel shows "erased record", its hash and contributor
    contributor: str = ""


@dataclass
class PanelContributor:
    user_id: int
    name: str
    wallet: str
    share: str


@dataclass
class Panel:
    """Everything the ancestry panel shows for one run."""

    run: Any
    state: str  # base_model | run_failed | pending | ok | no_index | failed
    attribution: RunAttribution | None = None
    answer: list[tuple[str, bool]] = field(default_factory=list)
    records: list[PanelRecord] = field(default_factory=list)
    contributors: list[PanelContributor] = field(default_factory=list)
    datanets: list[tuple[Any, str, bool]] = field(default_factory=list)
    signals: list[tuple[str, str, float]] = field(default_factory=list)
    reliability: Reliability | None = None
    more_count: int = 0  # credited records beyond the top ones shown
    more_share: str = ""  # their part of the credit, as a percentage

    @property
    def finished(self) -> bool:
        return self.state != "pending"

    @property
    def final(self) -> bool:
        """The run's attribution is final (ok, no_index, failed for good): what it credited will not change, and the
        apps above show their parts (``hooks.panel_sections``, ``hooks.attribution_extras``)."""
        return self.attribution is not None and self.state in ("ok", "no_index", "failed")

    @property
    def verdict(self) -> str:
        """supported | partly_supported | unsupported, or blank for runs scored before verdicts existed."""
        return self.attribution.verdict if self.attribution is not None else ""

    @property
    def confidence(self) -> str:
        value = self.attribution.confidence if self.attribution is not None else None
        return "" if value is None else f"{value * 100:.0f}%"


def _latest_proofs(record_ids: list[int]) -> dict[int, SnapshotRecord]:
    """Each record's leaf in its newest snapshot (whose Merkle root is anchored), for the proof links."""
    proofs: dict[int, SnapshotRecord] = {}
    leaves = (
        SnapshotRecord.objects.filter(record_id__in=record_ids)
        .select_related("snapshot", "snapshot__datanet")
        .order_by("record_id", "-snapshot__created_at", "-snapshot_id")
    )
    for leaf in leaves:
        proofs.setdefault(leaf.record_id, leaf)
    return proofs


def run_panel(*, run: Any, user: Any) -> Panel:
    """The panel of ``run`` as ``user`` sees it: records of Datanets they may not view are counted but not shown."""
    if run.version_id is None and not run.composition:
        return Panel(run=run, state="base_model")
    attribution = RunAttribution.objects.select_related("index").filter(run=run).first()
    # a composite was never self-checked as such: its components' self-checks do not measure it
    index = None if run.composition else AttributionIndex.objects.filter(version_id=run.version_id).first()
    if run.status == "failed":
        return Panel(run=run, state="run_failed")
    if attribution is None or not attribution.is_finished:
        return Panel(run=run, state="pending", attribution=attribution)
    panel = Panel(run=run, state=attribution.status, attribution=attribution, reliability=version_reliability(index))
    if attribution.status != RunAttribution.Status.OK:
        return panel
    spans = list(SpanMatch.objects.filter(run_attribution=attribution).select_related("record"))
    # a span an erased record held is not highlighted: it would confirm what the erased text said
    shown = [s for s in spans if not record_is_erased(s.record)]
    panel.answer = highlighted(run.answer, [(s.answer_start, s.answer_end) for s in shown])
    rows = list(
        RecordAttribution.objects.filter(run_attribution=attribution)
        .select_related("record", "record__datanet", "contribution", "contribution__contributor")
        .order_by("rank")[:TOP_RECORDS]
    )
    beyond = list(
        RecordAttribution.objects.filter(run_attribution=attribution, rank__gt=TOP_RECORDS).values_list(
            "share", flat=True
        )
    )
    panel.more_count = len(beyond)
    panel.more_share = percent(sum((Fraction(share) for share in beyond), Fraction(0)))
    proofs = _latest_proofs([r.record_id for r in rows])
    for row in rows:
        record = row.record
        visible = user_can_view(user=user, datanet=record.datanet)
        erased = record_is_erased(record)
        ranges = [
            (s.record_start, s.record_end)
            for s in spans
            if s.record_id == record.pk and s.record_start is not None and s.record_end is not None
        ]
        panel.records.append(
            PanelRecord(
                row=row,
                record=record,
                text=highlighted(record_display_text(record), ranges) if visible and not erased else [],
                visible=visible,
                proof=proofs.get(record.pk) if visible else None,
                signals=[(SIGNAL_LABELS[s], percent(v)) for s, v in sorted(row.by_signal.items())],
                share=percent(row.share),
                erased=erased,
                contributor=row.contribution.contributor.get_username() if visible else "",
            )
        )
    user_ids = [int(u) for u, _ in attribution.contributors]
    names = dict(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username"))
    wallets = primary_addresses(user_ids=user_ids)
    panel.contributors = [
        PanelContributor(int(u), names.get(int(u), f"#{u}"), wallets.get(int(u), ""), percent(s))
        for u, s in attribution.contributors
    ]
    datanets = Datanet.objects.in_bulk([int(d) for d, _ in attribution.datanets])
    panel.datanets = [
        (datanets[int(d)], percent(s), user_can_view(user=user, datanet=datanets[int(d)]))
        for d, s in attribution.datanets
        if int(d) in datanets
    ]
    shares = attribution.signal_shares
    panel.signals = [
        (SIGNAL_LABELS[s], percent(shares[s]), float(Fraction(shares[s])) * 100)
        for s in SIGNALS
        if s in shares and (Fraction(shares[s]) > 0 or s in ("gradient", "span"))
    ]
    return panel


@dataclass(frozen=True)
class Credit:
    """One credited record of a run as a viewer may see it: identified when its Datanet is visible to them, else
    only its rank and share (counted, not shown)."""

    row: RecordAttribution
    visible: bool


def run_credits(*, attribution: RunAttribution) -> Any:
    """Every credited record of an attribution, by rank (a queryset, for paging)."""
    return (
        RecordAttribution.objects.filter(run_attribution=attribution)
        .select_related("record", "record__datanet", "contribution")
        .order_by("rank", "pk")
    )


def credits_as_seen(*, rows: list[RecordAttribution], user: Any) -> list[Credit]:
    """``rows`` (one page of ``run_credits``) with each Datanet's visibility to ``user`` decided once."""
    seen: dict[int, bool] = {}
    out = []
    for row in rows:
        datanet = row.record.datanet
        if datanet.pk not in seen:
            seen[datanet.pk] = user_can_view(user=user, datanet=datanet)
        out.append(Credit(row=row, visible=seen[datanet.pk]))
    return out


def index_holds_record(version: Any, record_id: int) -> bool:
    """Whether ``version``'s attribution index still holds anything of record ``record_id``: a token in its span
    index or a non-zero gradient feature row. Read from the stored files, checked against the hashes the index row
    names (after an erasure, the re-issue's); False for a version without a usable index or a record it never held.
    """
    index = AttributionIndex.objects.filter(version=version, status=AttributionIndex.Status.OK).first()
    if index is None or int(record_id) not in set(index.record_ids):
        return False
    matrix, spans = load_index(media_path(index.path), feature_hash=index.feature_hash, span_hash=index.span_hash)
    return spans.holds_tokens(int(record_id)) or not matrix.row_is_zero(int(record_id))

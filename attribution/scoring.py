"""Combining per-signal record scores into attribution shares, and rolling them up: pure Python.

The rule is an explicit, versioned policy (``POLICY_V1``); a stored result names its policy version and keeps each
signal's part of each record's share, so nothing is blended silently and any result can be recomputed.

How a result is computed (``combine``):
1. Per signal, records whose raw score is below the policy's ``min_score`` for that signal, or below
   ``relative_floor`` times the signal's best score, are dropped (negative gradient cosines are never credit); the
   best ``top_k`` remain (ties broken by record id) and their scores are normalised to sum to 1 within the signal.
2. The policy's weights are renormalised over the signals that fired, so a version without retrieval gives its
   retrieval weight to the others in proportion (the effective weights are part of the result).
3. Each (record, signal) pair's part is ``effective weight x normalised score``; the parts are quantised to
   integer units of ``1 / SHARE_DENOMINATOR`` by largest remainder (ties by record id, then signal), so shares are
   exact ``Fraction``\\ s: record shares sum to exactly 1, each record's signal parts sum to exactly its share, and
   the roll-ups (contributions, contributors, Datanets) are exact sums too. When no signal fires everything is 0
   and the result is ``unattributed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

SIGNALS = ("gradient", "span", "retrieval")
SHARE_DENOMINATOR = 10**9
SIGNAL_LABELS = {"gradient": "gradient influence", "span": "verbatim span matches", "retrieval": "retrieval citations"}


@dataclass(frozen=True)
class AttributionPolicy:
    """How signals combine. Stored with every result by ``version``; a change of any number is a new version."""

    version: int
    weights: Mapping[str, float]
    top_k: int
    min_score: Mapping[str, float]
    relative_floor: float

    def __post_init__(self) -> None:
        if set(self.weights) - set(SIGNALS) or any(w < 0 for w in self.weights.values()):
            raise ValueError(f"weights must be non-negative and for the signals {SIGNALS}")
        if self.top_k < 1 or not 0.0 <= self.relative_floor <= 1.0:
            raise ValueError("top_k must be at least 1 and relative_floor within [0, 1]")

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "weights": dict(self.weights),
            "top_k": self.top_k,
            "min_score": dict(self.min_score),
            "relative_floor": self.relative_floor,
        }


POLICY_V1 = AttributionPolicy(
    version=1,
    weights={"gradient": 0.6, "span": 0.3, "retrieval": 0.1},
    top_k=20,
    min_score={"gradient": 0.0, "span": 0.0, "retrieval": 0.0},
    # a record under half the best record's gradient cosine is background, not influence
    relative_floor=0.5,
)
POLICIES = {POLICY_V1.version: POLICY_V1}


def policy_for(version: int) -> AttributionPolicy:
    """The policy a stored result names; KeyError for an unknown version."""
    return POLICIES[version]


@dataclass(frozen=True)
class RecordShare:
    """One record's share of the answer and each signal's exact part of it (``sum(by_signal.values()) == share``)."""

    record_id: int
    share: Fraction
    by_signal: Mapping[str, Fraction]
    raw_scores: Mapping[str, float]


@dataclass(frozen=True)
class Attribution:
    """A combined result: records by share (largest first, then by id), signal totals and effective weights."""

    policy_version: int
    records: tuple[RecordShare, ...]
    signal_shares: Mapping[str, Fraction]
    effective_weights: Mapping[str, float]
    fired: tuple[str, ...] = field(default_factory=tuple)

    @property
    def unattributed(self) -> bool:
        return not self.records

    @property
    def total(self) -> Fraction:
        """1 when any signal fired, else 0."""
        return sum((r.share for r in self.records), Fraction(0))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: shares as ``"numerator/denominator"`` strings, so a stored result loses nothing."""
        return {
            "policy_version": self.policy_version,
            "fired": list(self.fired),
            "effective_weights": dict(self.effective_weights),
            "signal_shares": {s: str(v) for s, v in self.signal_shares.items()},
            "records": [
                {
                    "record_id": r.record_id,
                    "share": str(r.share),
                    "by_signal": {s: str(v) for s, v in r.by_signal.items()},
                    "raw_scores": dict(r.raw_scores),
                }
                for r in self.records
            ],
        }


def _kept(scores: Mapping[int, float], policy: AttributionPolicy, signal: str) -> dict[int, float]:
    floor = policy.min_score.get(signal, 0.0)
    positive = {int(r): float(s) for r, s in scores.items() if s > 0 and s >= floor}
    if not positive:
        return {}
    best = max(positive.values())
    above = [(r, s) for r, s in positive.items() if s >= policy.relative_floor * best]
    above.sort(key=lambda item: (-item[1], item[0]))
    return dict(above[: policy.top_k])


def _largest_remainder(parts: Mapping[tuple[int, int], float], total_units: int) -> dict[tuple[int, int], int]:
    """Integer units proportional to ``parts`` summing to exactly ``total_units``; leftover units go to the largest
    fractional remainders, ties to the smallest key (record id, signal index)."""
    total = sum(parts.values())
    exact = {key: value / total * total_units for key, value in parts.items()}
    units = {key: int(value) for key, value in exact.items()}
    leftover = total_units - sum(units.values())
    for key in sorted(exact, key=lambda key: (-(exact[key] - units[key]), key))[:leftover]:
        units[key] += 1
    return units


def combine(signal_scores: Mapping[str, Mapping[int, float]], policy: AttributionPolicy = POLICY_V1) -> Attribution:
    """Combine ``{signal: {record_id: raw score}}`` under ``policy`` (see the module docstring).

    Promises: record shares are exact fractions summing to 1 (or no records when nothing fired); each record's
    ``by_signal`` parts sum to its share; the order is deterministic (share descending, then record id).
    """
    unknown = set(signal_scores) - set(SIGNALS)
    if unknown:
        raise ValueError(f"unknown signals: {sorted(unknown)}")
    kept = {s: _kept(signal_scores.get(s, {}), policy, s) for s in SIGNALS}
    fired = tuple(s for s in SIGNALS if kept[s] and policy.weights.get(s, 0.0) > 0)
    weight_sum = sum(policy.weights[s] for s in fired)
    effective = {s: (policy.weights[s] / weight_sum if s in fired else 0.0) for s in SIGNALS}
    if not fired:
        return Attribution(policy.version, (), {s: Fraction(0) for s in SIGNALS}, effective, ())
    parts: dict[tuple[int, int], float] = {}
    for index, signal in enumerate(SIGNALS):
        if signal not in fired:
            continue
        signal_total = sum(kept[signal].values())
        for record_id, score in kept[signal].items():
            parts[(record_id, index)] = effective[signal] * score / signal_total
    units = _largest_remainder(parts, SHARE_DENOMINATOR)
    by_record: dict[int, dict[str, Fraction]] = {}
    for (record_id, index), n in units.items():
        by_record.setdefault(record_id, {})[SIGNALS[index]] = Fraction(n, SHARE_DENOMINATOR)
    records = []
    for record_id, by_signal in by_record.items():
        share = sum(by_signal.values(), Fraction(0))
        if share == 0:
            continue
        raw = {s: float(signal_scores[s][record_id]) for s in SIGNALS if record_id in kept[s]}
        records.append(RecordShare(record_id, share, by_signal, raw))
    records.sort(key=lambda r: (-r.share, r.record_id))
    signal_shares = {s: sum((r.by_signal.get(s, Fraction(0)) for r in records), Fraction(0)) for s in SIGNALS}
    return Attribution(policy.version, tuple(records), signal_shares, effective, fired)


@dataclass(frozen=True)
class RecordOwner:
    """Where a record came from: what the caller knows and this module does not."""

    contribution_id: int
    contributor_id: int
    datanet_id: int


@dataclass(frozen=True)
class RollUp:
    """Exact shares per contribution, contributor and Datanet (each sums to the attribution's total), with each
    signal's part per contributor; orderings are share descending, then id."""

    contributions: tuple[tuple[int, Fraction], ...]
    contributors: tuple[tuple[int, Fraction], ...]
    datanets: tuple[tuple[int, Fraction], ...]
    contributor_signals: Mapping[int, Mapping[str, Fraction]]


def _ordered(totals: Mapping[int, Fraction]) -> tuple[tuple[int, Fraction], ...]:
    return tuple(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


def roll_up(attribution: Attribution, owners: Mapping[int, RecordOwner]) -> RollUp:
    """Sum record shares by contribution, contributor and Datanet. Every attributed record must have an owner
    (KeyError otherwise): a record that cannot be traced is a bug upstream, not something to pay around."""
    contributions: dict[int, Fraction] = {}
    contributors: dict[int, Fraction] = {}
    datanets: dict[int, Fraction] = {}
    signals: dict[int, dict[str, Fraction]] = {}
    for record in attribution.records:
        owner = owners[record.record_id]
        contributions[owner.contribution_id] = contributions.get(owner.contribution_id, Fraction(0)) + record.share
        contributors[owner.contributor_id] = contributors.get(owner.contributor_id, Fraction(0)) + record.share
        datanets[owner.datanet_id] = datanets.get(owner.datanet_id, Fraction(0)) + record.share
        per_signal = signals.setdefault(owner.contributor_id, {})
        for signal, part in record.by_signal.items():
            per_signal[signal] = per_signal.get(signal, Fraction(0)) + part
    return RollUp(_ordered(contributions), _ordered(contributors), _ordered(datanets), signals)


def _percent(share: Fraction) -> str:
    return f"{float(share) * 100:.1f}%"


def explain(
    attribution: Attribution,
    rollup: RollUp | None = None,
    *,
    contributor_names: Mapping[int, str] | None = None,
    longest_span: int | None = None,
) -> str:
    """One plain-language paragraph: which signals fired with what weight, how many records and contributors were
    credited, the top contributor, and the longest verbatim span when given."""
    if attribution.unattributed:
        return (
            "No signal credited any training record for this answer, so it is unattributed: "
            "its whole contributor share goes to the protocol pool."
        )
    methods = ", ".join(f"{SIGNAL_LABELS[s]} {_percent(attribution.signal_shares[s])}" for s in attribution.fired)
    text = (
        f"Policy v{attribution.policy_version} credited {len(attribution.records)} training "
        f"record{'s' if len(attribution.records) != 1 else ''}; the credit came from {methods}."
    )
    if longest_span:
        text += f" The longest verbatim span shared with the training data is {longest_span} tokens."
    if rollup is not None and rollup.contributors:
        top_id, top_share = rollup.contributors[0]
        name = (contributor_names or {}).get(top_id, f"contributor #{top_id}")
        text += (
            f" {len(rollup.contributors)} contributor{'s' if len(rollup.contributors) != 1 else ''} "
            f"share the credit; the largest share, {_percent(top_share)}, goes to {name}."
        )
    return text

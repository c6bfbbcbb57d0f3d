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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    support: SupportPolicy | None = None

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
            **({"support": self.support.as_dict()} if self.support is not None else {}),
        }


@dataclass(frozen=True)
class SupportPolicy:
    """When training records support an answer (``assess``), and how much of its credit may be paid.

    - A record is *relevant* when it contains at least ``relevance_min`` of the question's subject (its tokens the
      base model could not predict, weighted by their surprisal).
    - An answer token is *supported* when a relevant record contains it inside an n-gram of the answer.
    - The *supported fraction* is the supported part of the answer's content (tokens not copied from the prompt,
      not the end token), each token weighted by its surprisal under the base model (capped at
      ``surprisal_cap`` nats): the information the answer adds, not its filler words.
    - Verdict: supported from ``supported_at``, partly supported from ``partly_at``, else unsupported.
    - *Novelty*: 0 when the base model alone gave every content token at least e^-``novel_low`` (it knew the
      answer: what the base model already knew pays no one), 1 when some token was below e^-``novel_high``, linear
      between.
    - Paid fraction: supported fraction x novelty; 0 for an unsupported answer.
    - With ``in_context`` (policy v3) a content token that no relevant record contains verbatim is also supported
      by a relevant record that, placed before the prompt, raises the token's log-probability under the base model
      by at least ``context_gain`` nats to at least ``context_min_logp``: the record states the answer's value in
      other words (other casing, the value alone, another order). A record that states another value lowers it and
      supports nothing. A word whose tokens a record supports in part (verbatim or as above) and raises by at least
      ``context_word_gain`` nats each otherwise is supported whole by it: the base model rarely gives the first
      token of a value it reads in context a high probability (" qu" of "quistrel" for a record's " Quistrel"),
      while the rest of the word it then copies.
    - With ``same_word`` (policy v3) a content token that no relevant record contains inside an n-gram of the
      answer is also supported by the relevant records that contain its whole word, in any casing (a record's
      " amber" for an answer's "Amber.", its " Quelmar" for "Quelmar is the capital"): the verbatim test needs the
      word's neighbour too, which a reworded answer changes. Only records about the question count, so a value taught
      for another entity still supports nothing; verbatim n-grams win over a bare word, and a word wins over the
      in-context test.
    """

    relevance_min: float = 0.5
    supported_at: float = 0.8
    partly_at: float = 0.4
    surprisal_cap: float = 10.0
    novel_low: float = 1.5
    novel_high: float = 3.0
    in_context: bool = False
    context_gain: float = 1.0
    context_min_logp: float = -1.0
    context_word_gain: float = 2.0
    same_word: bool = False

    def as_dict(self) -> dict[str, Any]:
        rules: dict[str, Any] = {
            "relevance_min": self.relevance_min,
            "supported_at": self.supported_at,
            "partly_at": self.partly_at,
            "surprisal_cap": self.surprisal_cap,
            "novel_low": self.novel_low,
            "novel_high": self.novel_high,
        }
        if self.in_context:  # v2's stored policy stays as it was written
            rules.update(
                {
                    "in_context": True,
                    "context_gain": self.context_gain,
                    "context_min_logp": self.context_min_logp,
                    "context_word_gain": self.context_word_gain,
                }
            )
        if self.same_word:
            rules["same_word"] = True
        return rules


POLICY_V1 = AttributionPolicy(
    version=1,
    weights={"gradient": 0.6, "span": 0.3, "retrieval": 0.1},
    top_k=20,
    min_score={"gradient": 0.0, "span": 0.0, "retrieval": 0.0},
    # a record under half the best record's gradient cosine is background, not influence
    relative_floor=0.5,
)
# v2: v1 but credit only for supported content. Both signals are kept only for the records that support the answer
# (``assess``); the span signal is the information-weighted share of the answer's content each supporting record
# contains (not copied from the prompt); the gradient is taken over the answer's content tokens; shares sum to the
# paid fraction, not to 1.
POLICY_V2 = replace(
    POLICY_V1, version=2, weights={"gradient": 0.3, "span": 0.7, "retrieval": 0.0}, support=SupportPolicy()
)
# v3: v2, and a content token is also supported by a relevant record that contains its whole word in any casing
# (the same-word rule), so a right answer worded otherwise than its record pays that record's contributor
# (docs/decisions.md, issue 13 item 1: "In-context support", "Same-word support")
POLICY_V3 = replace(POLICY_V2, version=3, support=SupportPolicy(same_word=True))
# v3 with the in-context test on as well: measured by bench/attribution_eval.py (``v3_with_in_context``) and not the
# default, because on top of the same-word rule it supported no more answers there while it tripled the latency of
# a wrong answer (docs/decisions.md, "Same-word support")
POLICY_V3_IN_CONTEXT = replace(POLICY_V3, support=SupportPolicy(in_context=True, same_word=True))
POLICIES = {POLICY_V1.version: POLICY_V1, POLICY_V2.version: POLICY_V2, POLICY_V3.version: POLICY_V3}
CURRENT_POLICY = POLICY_V3


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
        """The part of the answer's credit given to records: 1 when any signal fired (policy v1); under v2 the
        paid fraction of a supported answer, 0 for an unsupported one."""
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


def combine(
    signal_scores: Mapping[str, Mapping[int, float]], policy: AttributionPolicy = POLICY_V1, *, paid: float = 1.0
) -> Attribution:
    """Combine ``{signal: {record_id: raw score}}`` under ``policy`` (see the module docstring).

    Promises: record shares are exact fractions summing to ``paid`` rounded to the share unit (1 by default; no
    records when nothing fired or nothing is paid); each record's ``by_signal`` parts sum to its share; the order
    is deterministic (share descending, then record id).
    """
    if not 0.0 <= paid <= 1.0:
        raise ValueError("paid must be within [0, 1]")
    total_units = round(paid * SHARE_DENOMINATOR)
    unknown = set(signal_scores) - set(SIGNALS)
    if unknown:
        raise ValueError(f"unknown signals: {sorted(unknown)}")
    kept = {s: _kept(signal_scores.get(s, {}), policy, s) for s in SIGNALS}
    fired = tuple(s for s in SIGNALS if kept[s] and policy.weights.get(s, 0.0) > 0)
    weight_sum = sum(policy.weights[s] for s in fired)
    effective = {s: (policy.weights[s] / weight_sum if s in fired else 0.0) for s in SIGNALS}
    if not fired or total_units == 0:
        return Attribution(policy.version, (), {s: Fraction(0) for s in SIGNALS}, effective, ())
    parts: dict[tuple[int, int], float] = {}
    for index, signal in enumerate(SIGNALS):
        if signal not in fired:
            continue
        signal_total = sum(kept[signal].values())
        for record_id, score in kept[signal].items():
            parts[(record_id, index)] = effective[signal] * score / signal_total
    units = _largest_remainder(parts, total_units)
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


VERDICTS = ("supported", "partly_supported", "unsupported")


@dataclass(frozen=True)
class Support:
    """Whether training records support an answer, and the evidence (``assess``).

    ``record_weights``: each supporting record's part of the supported information (the span signal under v2);
    ``relevant_not_supporting``: records about the question that get none of the credit: they do not contain what
    the answer says, or too little of it (an answer that contradicts a record leaves it here, uncredited);
    ``supported_by``: for each supported content token (answer position), the signal that supported it
    (``"span"``: a relevant record contains it verbatim; ``"in_context"``: a relevant record raises its likelihood)
    and the records credited for it; ``signal_weights``: each signal's part of the answer's content information.
    """

    verdict: str
    confidence: float
    supported_fraction: float
    novelty: float
    paid: float
    record_weights: Mapping[int, float]
    relevant_not_supporting: tuple[int, ...]
    agreement: float
    content_tokens: int
    reason: str
    supported_by: Mapping[int, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    signal_weights: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        evidence: dict[str, Any] = {}
        if self.signal_weights:  # policy v3: which signal supported what
            evidence = {
                "support_signals": {s: round(w, 6) for s, w in sorted(self.signal_weights.items())},
                "supported_tokens": [[t, s, list(r)] for t, (s, r) in sorted(self.supported_by.items())],
            }
        return {
            "verdict": self.verdict,
            "confidence": self.confidence,
            "supported_fraction": self.supported_fraction,
            "novelty": self.novelty,
            "paid_fraction": self.paid,
            "supporting_records": [[r, round(w, 6)] for r, w in sorted(self.record_weights.items())],
            "relevant_not_supporting": list(self.relevant_not_supporting),
            "gradient_agreement": self.agreement,
            "content_tokens": self.content_tokens,
            "reason": self.reason,
            **evidence,
        }


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def _whole_words(
    evidence: Any,
    rules: SupportPolicy,
    content: list[int],
    base: Mapping[int, float],
    covering: dict[int, list[int]],
    signal: dict[int, str],
) -> None:
    """Complete partly supported words in place (``SupportPolicy``, ``context_word_gain``): a content word with a
    supported token and unsupported ones that one relevant record raises by at least ``context_word_gain`` each is
    supported whole, its unsupported tokens credited to that record (the one that raises them most in total)."""
    starts = evidence.word_start
    if not starts:
        return
    words: list[list[int]] = []
    for t in content:
        if starts[t] or not words or words[-1][-1] != t - 1:
            words.append([t])
        else:
            words[-1].append(t)
    order = {t: k for k, t in enumerate(content)}
    for word in words:
        missing = [t for t in word if t not in covering]
        if not missing or len(missing) == len(word):
            continue
        best: tuple[float, int] | None = None
        for candidate in evidence.candidates:
            if candidate.relevance < rules.relevance_min or not candidate.context_logp:
                continue
            gains = [candidate.context_logp[order[t]] - base[t] for t in missing]
            if min(gains) >= rules.context_word_gain and (best is None or sum(gains) > best[0]):
                best = (sum(gains), candidate.record_id)
        if best is not None:
            for t in missing:
                covering[t], signal[t] = [best[1]], "in_context"


def assess(evidence: Any, gradient: Mapping[int, float], policy: AttributionPolicy = POLICY_V2) -> Support:
    """The support verdict of one answer from its evidence (``attribution.index.SupportEvidence``) under
    ``policy.support`` (see ``SupportPolicy``), with ``gradient`` (record -> cosine) for the agreement between
    signals.

    Confidence: for an answer called (partly) supported, the supported fraction times how much of the positive
    gradient credit also lands on the supporting records (0.6 + 0.4 x agreement); for an unsupported one,
    1 - the supported fraction.
    """
    rules = policy.support or SupportPolicy()
    content = list(evidence.content)
    weights = {t: min(max(float(evidence.surprisal[t]), 0.0), rules.surprisal_cap) for t in content}
    total = sum(weights.values())
    supporting = [c for c in evidence.candidates if c.relevance >= rules.relevance_min and c.covered]
    # each supported token goes to the record(s) with the longest verbatim span around it: the record that says the
    # whole fact, not the ones that share a word pair of it
    covering: dict[int, list[int]] = {}
    longest: dict[int, int] = {}
    for candidate in supporting:
        lengths = candidate.lengths or (1,) * len(candidate.covered)
        for t, length in zip(candidate.covered, lengths, strict=True):
            if length > longest.get(t, 0):
                longest[t], covering[t] = length, [candidate.record_id]
            elif length == longest[t]:
                covering[t].append(candidate.record_id)
    signal = dict.fromkeys(covering, "span")
    if rules.same_word:
        # a token whose whole word (any casing) a relevant record contains, where no n-gram of it does: every such
        # record shares it equally
        for candidate in evidence.candidates:
            if candidate.relevance < rules.relevance_min:
                continue
            for t in candidate.same_word:
                if signal.get(t, "word") == "word":
                    covering.setdefault(t, []).append(candidate.record_id)
                    signal[t] = "word"
        credited = {r for records in covering.values() for r in records}
        supporting = [c for c in evidence.candidates if c.record_id in credited]
    if rules.in_context and evidence.base_logp:
        # a token no relevant record contains verbatim goes to the relevant record(s) that raise its likelihood the
        # most, when they raise it enough (``SupportPolicy``); verbatim support, where there is any, wins
        base = dict(zip(content, evidence.base_logp, strict=True))
        best_gain: dict[int, float] = {}
        for candidate in evidence.candidates:
            if candidate.relevance < rules.relevance_min or not candidate.context_logp:
                continue
            for t, logp in zip(content, candidate.context_logp, strict=True):
                gain = logp - base[t]
                if signal.get(t) in ("span", "word") or gain < rules.context_gain or logp < rules.context_min_logp:
                    continue
                if t not in best_gain or gain > best_gain[t] + 1e-9:
                    best_gain[t], covering[t], signal[t] = gain, [candidate.record_id], "in_context"
                elif gain >= best_gain[t] - 1e-9:
                    covering[t].append(candidate.record_id)
        _whole_words(evidence, rules, content, base, covering, signal)
        credited = {r for records in covering.values() for r in records}
        supporting = [c for c in evidence.candidates if c.record_id in credited]
    record_weights: dict[int, float] = {}
    for t, records in covering.items():
        for record_id in records:
            record_weights[record_id] = record_weights.get(record_id, 0.0) + weights.get(t, 0.0) / len(records)
    # as fractions of the answer's content information, so a record that supports all of it scores 1
    record_weights = {r: w / total for r, w in record_weights.items()} if total > 0 else {}
    fraction = sum(weights.get(t, 0.0) for t in covering) / total if total > 0 else 0.0
    signal_weights: dict[str, float] = {}
    if rules.in_context or rules.same_word:
        for t in covering:
            signal_weights[signal[t]] = signal_weights.get(signal[t], 0.0) + (weights[t] / total if total else 0.0)
    if not content:
        fraction = 0.0
    verdict = (
        "supported"
        if fraction >= rules.supported_at
        else "partly_supported"
        if fraction >= rules.partly_at
        else "unsupported"
    )
    most = max((float(evidence.surprisal[t]) for t in content), default=0.0)
    novelty = _clip((most - rules.novel_low) / (rules.novel_high - rules.novel_low))
    positive = {r: g for r, g in gradient.items() if g > 0}
    agreement = sum(g for r, g in positive.items() if r in record_weights) / sum(positive.values()) if positive else 0.0
    if verdict == "unsupported":
        paid, confidence = 0.0, 1.0 - fraction
        record_weights = {}
    else:
        paid, confidence = fraction * novelty, fraction * (0.6 + 0.4 * agreement)
    if not content:
        reason = "the answer only repeats its question: there is no content for a training record to support"
    elif not supporting:
        reason = "no training record about the question contains what the answer says"
    elif verdict == "unsupported":
        reason = f"training records about the question contain only {fraction:.0%} of what the answer says"
    elif novelty < 1.0:
        reason = "the base model already gave this content without the fine-tune"
    else:
        reason = f"training records about the question contain {fraction:.0%} of what the answer says"
    if signal_weights.get("in_context") and content and supporting:
        reason += f" ({signal_weights['in_context']:.0%} of it in other words: the record makes it likely in context)"
    return Support(
        verdict=verdict,
        confidence=round(_clip(confidence), 4),
        supported_fraction=round(fraction, 4),
        novelty=round(novelty, 4),
        paid=round(_clip(paid), 6),
        record_weights=record_weights,
        relevant_not_supporting=tuple(
            c.record_id
            for c in evidence.candidates
            if c.relevance >= rules.relevance_min and c.record_id not in record_weights
        ),
        agreement=round(agreement, 4),
        content_tokens=len(content),
        reason=reason,
        supported_by={t: (signal[t], tuple(sorted(covering[t]))) for t in covering}
        if rules.in_context or rules.same_word
        else {},
        signal_weights=signal_weights,
    )


def combine_supported(
    gradient: Mapping[int, float], support: Support, policy: AttributionPolicy = POLICY_V2
) -> Attribution:
    """Policy v2: the gradient and span signals kept for the supporting records only (the span signal is each
    supporting record's part of the supported information), shares summing to the paid fraction."""
    kept = {r: g for r, g in gradient.items() if r in support.record_weights}
    return combine({"gradient": kept, "span": dict(support.record_weights)}, policy, paid=support.paid)


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


def owners_of(owner: RecordOwner | Sequence[RecordOwner]) -> tuple[RecordOwner, ...]:
    """A record's owners: one, or several when people contributed the same record (the same hash)."""
    return (owner,) if isinstance(owner, RecordOwner) else tuple(owner)


def roll_up(attribution: Attribution, owners: Mapping[int, RecordOwner | Sequence[RecordOwner]]) -> RollUp:
    """Sum record shares by contribution, contributor and Datanet. Every attributed record must have an owner
    (KeyError otherwise): a record that cannot be traced is a bug upstream, not something to pay around. A record
    with several owners (the same record contributed by several people) is split equally between them, exactly."""
    contributions: dict[int, Fraction] = {}
    contributors: dict[int, Fraction] = {}
    datanets: dict[int, Fraction] = {}
    signals: dict[int, dict[str, Fraction]] = {}
    for record in attribution.records:
        several = owners_of(owners[record.record_id])
        for owner in several:
            share = record.share / len(several)
            contributions[owner.contribution_id] = contributions.get(owner.contribution_id, Fraction(0)) + share
            contributors[owner.contributor_id] = contributors.get(owner.contributor_id, Fraction(0)) + share
            datanets[owner.datanet_id] = datanets.get(owner.datanet_id, Fraction(0)) + share
            per_signal = signals.setdefault(owner.contributor_id, {})
            for signal, part in record.by_signal.items():
                per_signal[signal] = per_signal.get(signal, Fraction(0)) + part / len(several)
    return RollUp(_ordered(contributions), _ordered(contributors), _ordered(datanets), signals)


def _percent(share: Fraction) -> str:
    return f"{float(share) * 100:.1f}%"


def explain(
    attribution: Attribution,
    rollup: RollUp | None = None,
    *,
    contributor_names: Mapping[int, str] | None = None,
    longest_span: int | None = None,
    support: Support | None = None,
    reward: Any = None,
) -> str:
    """One plain-language paragraph: the verdict and why (when ``support`` is given), which signals fired with what
    weight, how many records and contributors were credited, the top contributor, and the longest verbatim span
    when given. ``reward`` (the fee split's policy, ``hooks.SplitPolicy``) names what the builder keeps."""
    builder = f"{reward.builder_bps / 100:g}%" if reward is not None else "its part"
    if support is not None and support.verdict == "unsupported":
        return (
            f"No training record supports this answer: {support.reason}. No contributor is credited or paid for it; "
            f"the model's builder keeps {builder} of the fee and the rest goes to the protocol pool"
            + (f" (reward policy v{reward.version})." if reward is not None else ".")
        )
    lead = ""
    if support is not None:
        label = "supported" if support.verdict == "supported" else "partly supported"
        lead = (
            f"Training records {label} this answer: {support.reason}. Contributors are paid for "
            f"{support.paid:.0%} of the answer; the rest of their part of the fee goes to the protocol pool. "
        )
    if attribution.unattributed:
        if support is not None:
            return lead.strip()
        return (
            "No signal credited any training record for this answer, so it is unattributed: "
            "its whole contributor share goes to the protocol pool."
        )
    methods = ", ".join(f"{SIGNAL_LABELS[s]} {_percent(attribution.signal_shares[s])}" for s in attribution.fired)
    text = lead + (
        f"Policy v{attribution.policy_version} credited {len(attribution.records)} training "
        f"record{'s' if len(attribution.records) != 1 else ''}; the credit came from {methods}."
    )
    if longest_span:
        text += f" The longest verbatim span shared with the training data is {longest_span} tokens."
    if rollup is not None and rollup.contributors:
        top_id, top_share = rollup.contributors[0]
        name = (contributor_names or {}).get(top_id, f"contributor #{top_id}")
        count = len(rollup.contributors)
        text += (
            f" {count} contributor{'s share' if count != 1 else ' shares'} the credit; "
            f"the largest share, {_percent(top_share)}, goes to {name}."
        )
    return text

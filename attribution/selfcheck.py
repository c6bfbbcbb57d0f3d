"""The self-check of a model version's attribution: at the end of its job, in bounded time, the version answers a
sample of its own training questions and each answer is attributed as a real run would be; the measured figures,
with n, are stored on the version's index (``AttributionIndex.evaluation``).

What it measures: whether the record a question came from is credited, and its contributor paid, when the version
answers that question itself. The answers are *generated* by the version (greedy), not the record's own completion:
a completion copied from the record would be found verbatim by the span index every time and measure nothing but
that the record is indexed, while the generated answers are what people will be shown (wrong ones included). Each
answer is compared with the record's completion to split the figures into right and wrong answers.

It never fails the job: every error (and running out of time) is stored as the outcome, and the version is already
committed when it starts. The training worker's loaded base model generates; scoring goes through
``services.run_score``, the same path an inference run takes.
"""

from __future__ import annotations

import json
import logging
import random
import re
import statistics
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.utils import timezone

from datanets.models import Record
from datanets.storage import media_path
from modelfactory import encoding

from . import services
from .models import AttributionIndex

logger = logging.getLogger(__name__)

SCHEMA = "openledger.attribution_selfcheck.v1"
MAX_NEW_TOKENS = 40
GENERATE_BATCH = 4


@dataclass(frozen=True)
class Question:
    record_id: int
    contributor_id: int
    prompt: Any  # str, or chat messages
    reference: str


def sample_size() -> int:
    return max(0, int(settings.ATTRIBUTION_SELFCHECK_SAMPLE))


def time_limit() -> float:
    return max(1.0, float(settings.ATTRIBUTION_SELFCHECK_SECONDS))


def questions_for(index: AttributionIndex, *, size: int) -> list[Question]:
    """Up to ``size`` of the version's own training questions (records that have a prompt: plain text has none),
    drawn with the index's seed so a rerun asks the same ones."""
    candidates: list[tuple[int, str, str]] = []
    for group in index.groups:
        if group.get("record_type") == "text":
            continue
        candidates.extend((int(r), group["record_type"], group["mode"]) for r in group.get("record_ids", []))
    if not candidates or size <= 0:
        return []
    picked = random.Random(index.seed).sample(candidates, min(size, len(candidates)))
    rows = Record.objects.in_bulk([r for r, _, _ in picked])
    out = []
    for record_id, record_type, mode in picked:
        record = rows.get(record_id)
        if record is None:
            continue
        try:
            prompt, reference = encoding.sample_prompt(json.loads(record.canonical), record_type, mode)
        except (ValueError, KeyError, TypeError):
            continue  # a record without a question in this shape
        contributor = record.contribution.contributor_id if record.contribution_id else 0
        out.append(Question(record_id, contributor, prompt, str(reference)))
    return out


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def agrees(answer: str, reference: str, *, truncated: bool) -> bool:
    """Whether an answer says what the record's completion says: the same words, the completion inside a longer
    answer, or (when the answer was cut at the token limit) the start of the completion."""
    a, r = _normal(answer), _normal(reference)
    if not a or not r:
        return False
    return a == r or r in a or (truncated and r.startswith(a) and len(a) >= 12)


def _chat(prompt: Any) -> list[dict[str, str]]:
    return list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]


def _verdict_of(scored: Any) -> tuple[str, float | None]:
    """The verdict and confidence the scoring gave, where it gives one (blank and None otherwise)."""
    for holder in (scored, getattr(scored, "attribution", None), getattr(scored, "support", None)):
        verdict = getattr(holder, "verdict", None)
        if verdict:
            confidence = getattr(holder, "confidence", None)
            return str(verdict), (float(confidence) if confidence is not None else None)
    return "", None


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The measured figures of attributed answers (one dict each: right, asked_top1, owner_top1, owner_share,
    verdict, confidence)."""
    right = [r for r in rows if r["right"]]
    wrong = [r for r in rows if not r["right"]]
    out: dict[str, Any] = {
        "n": len(rows),
        "n_right": len(right),
        "n_wrong": len(wrong),
        "record_top1": _ratio(sum(r["asked_top1"] for r in rows), len(rows)),
        "owner_top1": _ratio(sum(r["owner_top1"] for r in rows), len(rows)),
        "owner_top1_right": _ratio(sum(r["owner_top1"] for r in right), len(right)),
        "owner_share_right": round(statistics.fmean(r["owner_share"] for r in right), 4) if right else None,
        "owner_share_wrong": round(statistics.fmean(r["owner_share"] for r in wrong), 4) if wrong else None,
    }
    judged = [r for r in rows if r["verdict"]]
    if judged:
        out["verdicts"] = {v: sum(r["verdict"] == v for r in judged) for v in sorted({r["verdict"] for r in judged})}
        out["unsupported_on_wrong"] = _ratio(
            sum(r["verdict"] == "unsupported" for r in wrong if r["verdict"]), sum(1 for r in wrong if r["verdict"])
        )
        out["supported_on_right"] = _ratio(
            sum(r["verdict"] != "unsupported" for r in right if r["verdict"]), sum(1 for r in right if r["verdict"])
        )
    confidences = [r["confidence"] for r in rows if r["confidence"] is not None]
    if confidences:
        out["mean_confidence"] = round(statistics.fmean(confidences), 4)
    return out


def version_selfcheck(*, version: Any, base: Any) -> dict[str, Any]:
    """Run the self-check of ``version`` (committed, with its index) on the worker's loaded ``base`` and store the
    outcome on its index; returns what was stored. Never raises.

    Bounded by ``ATTRIBUTION_SELFCHECK_SECONDS``: the clock is checked before each batch of answers and each
    attribution, so it can overrun by one of those (a few seconds on a CPU). Answers attributed before the limit
    count; the status says ``timed_out`` when the sample was not finished.
    """
    index = AttributionIndex.objects.filter(version=version).first()
    if index is None or not index.is_ok:
        return {}
    size = sample_size()
    started = time.monotonic()
    deadline = started + time_limit()
    outcome: dict[str, Any] = {
        "schema": SCHEMA,
        "status": "ok",
        "sample_size": size,
        "time_limit_seconds": time_limit(),
        "answers": f"generated by this version (greedy, at most {MAX_NEW_TOKENS} tokens)",
    }
    rows: list[dict[str, Any]] = []
    try:
        if size == 0:
            outcome["status"] = "off"
        else:
            questions = questions_for(index, size=size)
            outcome["asked"] = len(questions)
            rows = _attribute_sample(version=version, index=index, base=base, questions=questions, deadline=deadline)
            if len(rows) < len(questions):
                outcome["status"] = "timed_out"
    except Exception as exc:
        logger.exception("version %s: the attribution self-check failed", version.pk)
        outcome["status"] = "failed"
        outcome["error"] = f"{type(exc).__name__}: {exc}"[:500]
    outcome.update(figures(rows))
    outcome["seconds"] = round(time.monotonic() - started, 2)
    outcome["measured_at"] = timezone.now().isoformat()
    try:
        AttributionIndex.objects.filter(pk=index.pk).update(evaluation=outcome)
    except Exception:
        logger.exception("version %s: the self-check's figures could not be stored", version.pk)
    return outcome


def _attribute_sample(
    *, version: Any, index: AttributionIndex, base: Any, questions: list[Question], deadline: float
) -> list[dict[str, Any]]:
    from modelfactory import training  # torch: only a training worker runs the self-check

    rows: list[dict[str, Any]] = []
    adapter = media_path(version.adapter_path)
    for at in range(0, len(questions), GENERATE_BATCH):
        if time.monotonic() > deadline:
            break
        batch = questions[at : at + GENERATE_BATCH]
        answers = training.generate(
            base_model_dir=base.path,
            prompts=[q.prompt for q in batch],
            adapter_dir=adapter,
            max_new_tokens=MAX_NEW_TOKENS,
            base=base,
        )
        for question, answer in zip(batch, answers, strict=True):
            if time.monotonic() > deadline:
                return rows
            if not answer:
                continue
            truncated = len(base.tokenizer(answer, add_special_tokens=False)["input_ids"]) >= MAX_NEW_TOKENS
            run = SimpleNamespace(
                base_model=version.base_model,
                version=version,
                kind="chat",
                messages=_chat(question.prompt),
                prompt="",
                answer=answer,
                finish_reason="length" if truncated else "stop",
            )
            scored = services.run_score(run=run, index=index)
            records = scored.attribution.records
            contributors = dict(scored.rollup.contributors)
            top_contributor = scored.rollup.contributors[0][0] if scored.rollup.contributors else None
            verdict, confidence = _verdict_of(scored)
            rows.append(
                {
                    "right": agrees(answer, question.reference, truncated=truncated),
                    "asked_top1": bool(records) and records[0].record_id == question.record_id,
                    "owner_top1": top_contributor == question.contributor_id,
                    "owner_share": float(contributors.get(question.contributor_id, 0)),
                    "verdict": verdict,
                    "confidence": confidence,
                }
            )
    return rows

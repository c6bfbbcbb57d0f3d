"""Inference writes: submit a run, claim it in the worker, finish it (the one place a run ends), reap runs whose
worker was lost, seal finished runs into anchored batches."""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from tokenizers import Tokenizer

from common import ratelimit
from ledger import chain, governance, hashing
from ledger.rules import rules_in_force
from ledger.services import seal_batches
from modelfactory.models import BaseModel, ModelVersion
from outbox.services import enqueue_on_commit

from . import hooks, routing, streams
from .models import InferenceRun, RunBatch
from .selectors import versions_askable_by

logger = logging.getLogger(__name__)

WORKER_LOST = "the inference worker was lost; please retry"
FACTS_SCHEMA = "openledger.inference_run.v2"
FACTS_SCHEMA_V1 = "openledger.inference_run.v1"
ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 64
MAX_STOP = 4
MAX_STOP_CHARS = 64
MAX_SEED = (1 << 63) - 1
OPTION_KEYS = ("temperature", "top_p", "max_tokens", "stop", "seed")
DEFAULT_MAX_TOKENS = 256
# The chat template adds a few tokens around each message (role markers, separators) and a generation prompt.
CHAT_TOKENS_PER_MESSAGE = 5
CHAT_TOKENS_EXTRA = 3
# Without a tokenizer.json beside the base model, count conservatively: ~3 characters a token.
CHARS_PER_TOKEN_FALLBACK = 3


class RunRejected(ValueError):
    """A request that will not become a run: ``message`` for people, ``param`` the offending field, ``code`` and
    ``status`` for the API (OpenAI's error codes where one fits)."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class ModelNotFound(RunRejected):
    status = 404
    code = "model_not_found"


class PromptTooLong(RunRejected):
    code = "context_length_exceeded"


class AwaitingApproval(RunRejected):
    """The deployment gate is on and governance has not approved the version: only its owner may ask it."""

    status = 403
    code = "awaiting_governance_approval"


class ApprovalUnreadable(RunRejected):
    """The deployment gate is on and the version's approval cannot be read from chain: not assumed either way."""

    status = 503
    code = "governance_unavailable"


class RateLimited(RunRejected):
    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _signed_in(user: Any) -> bool:
    return user is not None and getattr(user, "is_authenticated", False) and user.is_active


def version_deployment_check(*, user: Any, version: ModelVersion) -> None:
    """With governance's deployment gate on (``ProtocolParameters.deploymentGate``), serve ``version`` to anyone but
    its owner only once ``ModelRegistry`` approved its manifest hash (a deployment proposal passed and was
    executed). Raises AwaitingApproval (403) when it is not approved, ApprovalUnreadable (503) when the chain cannot
    say; the owner is always served, and with the gate off nothing is checked."""
    if version.owner_id == user.pk:
        return
    if not rules_in_force().deployment_gate:
        return
    try:
        approved = governance.is_approved(version.manifest_hash)
    except chain.ChainError as e:
        logger.warning("version %s: its deployment approval is unreadable: %s", version.pk, e)
        raise ApprovalUnreadable(
            f"the model version {version.pk} needs governance approval to be served and the chain cannot be read to "
            "check it now; try again in a minute",
            param="model",
        ) from e
    if not approved:
        raise AwaitingApproval(
            f"the model version {version.pk} ({version.name}) awaits governance approval: while the deployment gate "
            "is on, only its owner may ask it until a deployment proposal for it passes and is executed",
            param="model",
        )


# -- validation ---------------------------------------------------------------------------------------------------


def _number(options: dict[str, Any], key: str, default: float) -> float:
    value = options.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RunRejected(f"{key} must be a number", param=key)
    return float(value)


def clean_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Validated generation options with defaults filled in: greedy (temperature 0), top_p 1, DEFAULT_MAX_TOKENS
    capped at INFERENCE_MAX_NEW_TOKENS, no stop sequences, no seed. Raises RunRejected."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise RunRejected(f"unknown option {unknown[0]!r}; known: {', '.join(OPTION_KEYS)}", param=unknown[0])
    temperature = _number(options, "temperature", 0.0)
    if not 0 <= temperature <= 2:
        raise RunRejected(f"temperature must be between 0 and 2, got {temperature:g}", param="temperature")
    top_p = _number(options, "top_p", 1.0)
    if not 0 < top_p <= 1:
        raise RunRejected(f"top_p must be greater than 0 and at most 1, got {top_p:g}", param="top_p")
    limit = settings.INFERENCE_MAX_NEW_TOKENS
    max_tokens = options.get("max_tokens")
    if max_tokens is None:
        max_tokens = min(DEFAULT_MAX_TOKENS, limit)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise RunRejected("max_tokens must be an integer", param="max_tokens")
    if not 1 <= max_tokens <= limit:
        raise RunRejected(f"max_tokens must be between 1 and {limit}, got {max_tokens}", param="max_tokens")
    stop = options.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise RunRejected("stop must be a non-empty string or a list of them", param="stop")
    if len(stop) > MAX_STOP or any(len(s) > MAX_STOP_CHARS for s in stop):
        raise RunRejected(f"at most {MAX_STOP} stop sequences of at most {MAX_STOP_CHARS} characters", param="stop")
    seed = options.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise RunRejected(f"seed must be an integer between 0 and {MAX_SEED}", param="seed")
    return {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "stop": stop, "seed": seed}


def _clean_text(text: Any, param: str) -> str:
    if not isinstance(text, str):
        raise RunRejected(f"{param} must be a string", param=param)
    if "\x00" in text:
        raise RunRejected(f"{param} contains a NUL character", param=param)
    if len(text) > settings.INFERENCE_MAX_PROMPT_CHARS:
        raise PromptTooLong(
            f"{param} is {len(text)} characters long; the limit is {settings.INFERENCE_MAX_PROMPT_CHARS}", param=param
        )
    return text


def clean_messages(messages: Any) -> list[dict[str, str]]:
    """Chat messages as [{role, content}]: roles system/user/assistant; content a string or OpenAI text parts."""
    if not isinstance(messages, list) or not messages:
        raise RunRejected("messages must be a non-empty list", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise RunRejected(f"at most {MAX_MESSAGES} messages", param="messages")
    cleaned = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RunRejected(f"messages[{i}] must be an object with role and content", param=f"messages[{i}]")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise RunRejected(f"messages[{i}].role must be one of {', '.join(ROLES)}", param=f"messages[{i}].role")
        if isinstance(content, list):  # OpenAI's content parts: only text is served
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            ):
                raise RunRejected(f"messages[{i}].content: only text parts are served", param=f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        cleaned.append({"role": role, "content": _clean_text(content, f"messages[{i}].content")})
    if not any(m["content"].strip() for m in cleaned):
        raise RunRejected("the messages are empty", param="messages")
    total = sum(len(m["content"]) for m in cleaned)
    if total > settings.INFERENCE_MAX_PROMPT_CHARS:
        raise PromptTooLong(
            f"the messages are {total} characters long; the limit is {settings.INFERENCE_MAX_PROMPT_CHARS}",
            param="messages",
        )
    return cleaned


@cache
def _tokenizer(folder: str) -> Any:
    """The base model's fast tokenizer through the ``tokenizers`` library alone (the web process never loads
    transformers); None when the folder has no tokenizer.json."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    return Tokenizer.from_file(str(path))


def count_prompt_tokens(
    *, base_model: BaseModel, prompt: str = "", messages: list[dict[str, str]] | None = None
) -> int:
    """Prompt tokens as the engine will count them, to within the chat template's few tokens per message."""
    tokenizer = _tokenizer(base_model.path)
    texts = [m["content"] for m in messages] if messages is not None else [prompt]
    if tokenizer is None:
        count = sum(math.ceil(len(t) / CHARS_PER_TOKEN_FALLBACK) for t in texts)
    else:
        count = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
    if messages is not None:
        count += CHAT_TOKENS_PER_MESSAGE * len(messages) + CHAT_TOKENS_EXTRA
    return count


def parse_rate(rate: str) -> tuple[int, int]:
    """ "60/minute" -> (60, 60): the INFERENCE_RATE_LIMIT setting as requests allowed per window, window seconds."""
    return ratelimit.parse_rate(rate, setting="INFERENCE_RATE_LIMIT")


def _redis_rate_count(key: str, period: int) -> int | None:
    """This request's number in its window, counted in Redis; None when Redis is unreachable."""
    try:
        # INCR is atomic, so concurrent requests cannot both take the last slot.
        pipe = streams._client().pipeline()
        pipe.incr(key)
        pipe.expire(key, period + 1)
        return pipe.execute()[0]
    except Exception as e:
        if not streams.is_redis_error(e):
            raise
        logger.warning("rate limit: Redis is unreachable (%s); counting in the cache", e)
        return None


def _rate_check(user: Any) -> None:
    """Fixed window per user: count this request, raise RateLimited once the window's allowance is spent."""
    window = ratelimit.current_window(settings.INFERENCE_RATE_LIMIT, setting="INFERENCE_RATE_LIMIT")
    key = f"openledger:inference:rate:{user.pk}:{window.period}:{window.number}"
    count = _redis_rate_count(key, window.period) if streams.uses_redis() else None
    if count is None:  # no Redis, or it is away: the cache counts (per cache, a good enough window)
        count = ratelimit.cache_count(key, window.period)
    if count > window.allowed:
        raise RateLimited(
            f"rate limit of {settings.INFERENCE_RATE_LIMIT} reached; retry in {window.retry_after} s",
            retry_after=window.retry_after,
        )


# -- submit -------------------------------------------------------------------------------------------------------


# Queued by its registered name: inference.tasks imports this module.
RUN_GENERATE_TASK = "inference.tasks.run_generate_task"


def _enqueue(run_id: int, route: routing.Route) -> None:
    enqueue_on_commit(RUN_GENERATE_TASK, run_id, queue=route.queue)


@transaction.atomic
def run_submit(
    *,
    user: Any,
    version: ModelVersion | None,
    prompt: str = "",
    messages: list[dict] | None = None,
    options: dict | None = None,
    source: str = "web",
    base_model: BaseModel | None = None,
    composition: Any = None,
) -> InferenceRun:
    """Validate a question and queue it: a chat run with ``messages``, else a completion run with ``prompt``.

    ``version`` must be askable by ``user`` (published, or the user's own); None asks ``base_model`` alone (default:
    the default base model). The run is sent to one inference worker (``routing``: its adapter's, among the live
    ones) or, with none known, to the shared ``inference`` queue. Options: temperature 0..2 (0 greedy, the
    default), top_p (0, 1], max_tokens 1..INFERENCE_MAX_NEW_TOKENS, stop (at most 4 strings), seed. Limits:
    INFERENCE_MAX_PROMPT_TOKENS counted with the base model's tokenizer, INFERENCE_RATE_LIMIT per user. With
    governance's deployment gate on, a version not yet approved is served to its owner only
    (``version_deployment_check``). ``composition``, a checked ``composites.CleanComposition`` (with ``version``
    None), asks several versions at once, combined at request time: the run records its document. Raises
    RunRejected (ModelNotFound, AwaitingApproval, ApprovalUnreadable, PromptTooLong, RateLimited) writing nothing;
    the generation task is queued when the transaction commits.
    """
    if not _signed_in(user):
        raise RunRejected("sign in to ask a model", code="invalid_api_key")
    if source not in InferenceRun.Source.values:
        raise RunRejected(f"unknown source {source!r}", param="source")
    if composition is not None:
        if version is not None:
            raise RunRejected("ask one model version or a composite, not both", param="model")
        base_model = composition.base_model
    elif version is not None:
        if not versions_askable_by(user=user).filter(pk=version.pk).exists():
            raise ModelNotFound(f"the model version {version.pk} does not exist or is not published", param="model")
        version_deployment_check(user=user, version=version)
        base_model = version.base_model
    elif base_model is None:
        base_model = BaseModel.objects.filter(is_default=True).first()
        if base_model is None:
            raise ModelNotFound("no default base model is registered", param="model")
    if messages is not None:
        messages = clean_messages(messages)
        kind, prompt, param = InferenceRun.Kind.CHAT, "", "messages"
    else:
        prompt = _clean_text(prompt, "prompt")
        if not prompt.strip():
            raise RunRejected("the prompt is empty", param="prompt")
        kind, param = InferenceRun.Kind.COMPLETION, "prompt"
    options = clean_options(options)
    tokens = count_prompt_tokens(base_model=base_model, prompt=prompt, messages=messages)
    if tokens > settings.INFERENCE_MAX_PROMPT_TOKENS:
        raise PromptTooLong(
            f"the prompt is {tokens} tokens long; the limit is {settings.INFERENCE_MAX_PROMPT_TOKENS}", param=param
        )
    _rate_check(user)
    # the adapter's worker among the live ones (routing): its adapter stays loaded there
    route = routing.route_for(
        routing.route_key(
            adapter_sha256=version.adapter_sha256 if version is not None else None, base_model_path=base_model.path
        )
    )
    run = InferenceRun.objects.create(
        user=user,
        version=version,
        base_model=base_model,
        kind=kind,
        prompt=prompt,
        messages=messages,
        options=options,
        source=source,
        prompt_tokens=tokens,
        routed_to=route.node,
        composition=composition.document if composition is not None else None,
    )
    # through the outbox: the run commits whatever the broker does, and its message is sent once the broker is back
    _enqueue(run.pk, route)
    return run


# -- the worker's side --------------------------------------------------------------------------------------------


def _claimant_is_dead(claimed_by: str) -> bool:
    """Whether the process that claimed a run ran on this machine and is gone (a pool child killed, say): its run is
    taken over at once by the redelivered message rather than after INFERENCE_STALE_SECONDS."""
    host, _, pid = claimed_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _locked(run_id: int) -> InferenceRun | None:
    # of=self: the version is a nullable join, which PostgreSQL will not lock (nor need we)
    runs = InferenceRun.objects.select_for_update(of=("self",)).select_related("version", "base_model")
    return runs.filter(pk=run_id).first()


@transaction.atomic
def run_claim(*, run_id: int, worker: str, now: datetime | None = None) -> InferenceRun | None:
    """Take a queued run for ``worker`` (queued -> running). A redelivered message finds the run finished or freshly
    claimed and gets None; a run whose claim went stale (no heartbeat for INFERENCE_STALE_SECONDS) is taken over."""
    now = now or timezone.now()
    run = _locked(run_id)
    if run is None or run.is_finished:
        return None
    if run.status == InferenceRun.Status.RUNNING and not _claimant_is_dead(run.claimed_by):
        beat = run.heartbeat_at or run.started_at
        if beat is not None and beat > now - timedelta(seconds=settings.INFERENCE_STALE_SECONDS):
            return None
    run.status = InferenceRun.Status.RUNNING
    run.claimed_by = worker[:255]
    run.started_at = now
    run.heartbeat_at = now
    run.attempts += 1
    if run.seed is None and run.options.get("temperature"):
        # fixed at the first claim, so a retry after a lost worker samples the same tokens it may have streamed
        run.seed = run.options.get("seed") if run.options.get("seed") is not None else secrets.randbits(63)
    run.save(update_fields=["status", "claimed_by", "started_at", "heartbeat_at", "attempts", "seed"])
    return run


def runs_heartbeat(*, worker: str) -> int:
    """Mark every run ``worker`` is generating as alive."""
    return InferenceRun.objects.filter(claimed_by=worker, status=InferenceRun.Status.RUNNING).update(
        heartbeat_at=timezone.now()
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def run_facts(run: InferenceRun) -> bytes:
    """The facts of a finished run as RFC 8785 canonical JSON (``ledger.hashing.jcs``, schema
    ``openledger.inference_run.v2``): what ``run_hash`` hashes. The version stands in by its lineage manifest hash,
    which pins the adapter, the base and the training data; a composite's facts add ``composition`` (method, density,
    seed as a decimal string, and each component's version, manifest hash, adapter hash, weight and share).

    Seeds (the run's and the one asked for in ``options``) are decimal strings: they go up to 2**63 - 1, beyond what
    a JavaScript reader holds exactly. The other options stay as given (``0.7`` stays a float; JCS writes ``1.0``
    as ``1``, as every JCS implementation does). Facts stored under v1 (``json.dumps``, integer seeds) keep their
    bytes and ``run_hash``: nothing re-serialises a finished run."""
    version = run.version
    options = dict(run.options)
    if options.get("seed") is not None:
        options["seed"] = hashing.uint_text(int(options["seed"]))
    composite = {"composition": _composition_facts(run.composition)} if run.composition else {}
    return hashing.jcs(
        {
            **composite,
            "schema": FACTS_SCHEMA,
            "run": str(run.public_id),
            "model": {
                "version": version.pk if version is not None else None,
                "manifest_hash": version.manifest_hash if version is not None else None,
                "base_model": run.base_model.name,
                "base_weights_sha256": run.base_model.weights_sha256,
            },
            "kind": run.kind,
            "prompt": run.prompt,
            "messages": run.messages,
            "options": options,
            "seed": hashing.uint_text(run.seed),
            "status": run.status,
            "answer": run.answer,
            "error": run.error,
            "finish_reason": run.finish_reason,
            "prompt_tokens": run.prompt_tokens,
            "completion_tokens": run.completion_tokens,
            "created_at": _iso(run.created_at),
            "finished_at": _iso(run.finished_at),
        }
    )


def _composition_facts(document: dict[str, Any]) -> dict[str, Any]:
    seed = document.get("seed")
    return {**document, "seed": hashing.uint_text(int(seed)) if seed is not None else None}


@transaction.atomic
def run_finish(
    *,
    run_id: int,
    answer: str = "",
    error: str = "",
    finish_reason: str = "",
    prompt_tokens: int | None = None,
    completion_tokens: int = 0,
    latency_ms: int | None = None,
    first_token_ms: int | None = None,
    seed: int | None = None,
    expected_worker: str | None = None,
    now: datetime | None = None,
) -> InferenceRun | None:
    """The one place a run ends: succeeded (no ``error``) or failed, its facts and ``run_hash`` written, the final
    stream event published once this commits, the ``run finished`` receivers (``hooks``) told inside this
    transaction. Returns None, changing nothing, when the run already ended or (with
    ``expected_worker``) another worker has claimed it since."""
    run = _locked(run_id)
    if run is None or run.is_finished:
        return None
    if expected_worker is not None and run.claimed_by != expected_worker:
        return None
    run.status = InferenceRun.Status.FAILED if error else InferenceRun.Status.SUCCEEDED
    run.error = error
    run.answer = answer
    run.finish_reason = "error" if error else finish_reason
    if prompt_tokens is not None:
        run.prompt_tokens = prompt_tokens
    run.completion_tokens = completion_tokens
    run.latency_ms = latency_ms
    run.first_token_ms = first_token_ms
    if seed is not None:
        run.seed = seed
    run.finished_at = now or timezone.now()
    run.facts = run_facts(run).decode()
    run.run_hash = hashing.keccak_hex(run.facts.encode())
    run.save()
    event = streams.ERROR if error else streams.DONE
    public_id, data = run.public_id, streams.final_data(run)
    # robust: a Redis that is away must not fail the worker after the commit (readers then answer from the row). A
    # function, not a functools.partial: Django's robust error path logs the callback's __qualname__.
    transaction.on_commit(lambda: streams.publish_final(public_id=public_id, type_=event, data=data), robust=True)
    for receiver in hooks.run_finished_receivers():
        receiver(run)  # in this transaction: an answer's attribution is queued on its commit
    return run


def _requeue(run: InferenceRun, *, nodes: list[str], exclude: set[str]) -> bool:
    """Send the locked ``run`` to another live inference worker (queued again, its claim dropped); False when no
    live worker is left to take it."""
    route = routing.route_for(routing.run_key(run), nodes=nodes, exclude=exclude)
    if not route.node:
        return False
    lost = run.routed_to or run.claimed_by or "the shared queue"
    run.status = InferenceRun.Status.QUEUED
    run.claimed_by = ""
    run.heartbeat_at = None
    run.routed_to = route.node
    run.save(update_fields=["status", "claimed_by", "heartbeat_at", "routed_to"])
    _enqueue(run.pk, route)
    logger.warning("inference run %s: its worker (%s) was lost; sent to %s", run.public_id, lost, route.node)
    return True


def runs_reap_stale(*, now: datetime | None = None) -> int:
    """Take back runs whose inference worker was lost; returns how many were sent elsewhere or failed.

    - running without a heartbeat for INFERENCE_STALE_SECONDS: sent to another live inference worker while it has
      been claimed fewer than INFERENCE_MAX_ATTEMPTS times (the new worker regenerates it and streams only what the
      lost one had not sent: ``streams.RunStreamWriter``'s retry), else failed (WORKER_LOST);
    - queued for a worker that is no longer alive: sent to a live one (its message waits in a queue nobody reads);
    - queued for INFERENCE_QUEUE_TIMEOUT_SECONDS: failed.

    Every change is made under the run's row lock and re-checked there, and a claim or finish by the lost worker's
    message, should it come back, finds the run claimed or finished and does nothing (``run_claim``, ``run_finish``
    with ``expected_worker``): each run is answered once.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.INFERENCE_STALE_SECONDS)
    waited = now - timedelta(seconds=settings.INFERENCE_QUEUE_TIMEOUT_SECONDS)
    live = routing.live_workers()
    running = InferenceRun.objects.filter(status=InferenceRun.Status.RUNNING, heartbeat_at__lt=stale)
    queued = InferenceRun.objects.filter(status=InferenceRun.Status.QUEUED).filter(
        Q(created_at__lt=waited) | (~Q(routed_to="") & ~Q(routed_to__in=live))
    )
    reaped = 0
    for run_id in [*running.values_list("id", flat=True), *queued.values_list("id", flat=True)]:
        with transaction.atomic():
            # re-checked under the row lock: the worker may have finished or beaten since the query above
            run = _locked(run_id)
            if run is None or run.is_finished:
                continue
            if run.status == InferenceRun.Status.RUNNING:
                beat = run.heartbeat_at or run.started_at
                if beat is not None and beat >= stale:
                    continue
                if run.attempts < settings.INFERENCE_MAX_ATTEMPTS and _requeue(
                    run, nodes=live, exclude={run.routed_to}
                ):
                    reaped += 1
                    continue
            elif run.created_at >= waited:
                if run.routed_to and run.routed_to not in live and _requeue(run, nodes=live, exclude=set()):
                    reaped += 1
                continue
            if run_finish(run_id=run_id, error=WORKER_LOST, answer=run.answer, now=now) is not None:
                reaped += 1
                logger.warning("inference run %s failed: %s", run.public_id, WORKER_LOST)
    return reaped


# -- batches ------------------------------------------------------------------------------------------------------


def runs_seal_batches(*, now: datetime | None = None, force: bool = False) -> list[RunBatch]:
    """Seal succeeded, unbatched runs into batches: one per INFERENCE_BATCH_RUNS runs, or whatever is there once
    the oldest has waited INFERENCE_BATCH_SECONDS (``force``: now). Each batch's root is anchored on chain."""
    waiting = InferenceRun.objects.filter(status=InferenceRun.Status.SUCCEEDED, batch__isnull=True).exclude(run_hash="")
    return seal_batches(RunBatch, waiting, now=now or timezone.now(), force=force)

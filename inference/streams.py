"""Per-run event streams: the worker publishes a run's text as it is generated; web views read it back.

With Redis as the broker (``settings.BROKER_KIND == "redis"``) a run's events go to a Redis Stream (XADD with a
length cap, the key expiring after INFERENCE_STREAM_TTL_SECONDS), read with blocking XREAD. Without Redis the
database is the stream: the worker writes the run's partial answer every few tokens and readers poll the row, the
event id being the length of the answer already delivered. Both give the same reader API, ``run_events``.

The final event is published after the run's row is committed (see ``services.run_finish``), so a reader that sees
"done" or "error" finds the finished row in the database.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

TOKEN, DONE, ERROR = "token", "done", "error"
STREAM_MAXLEN = 20_000
# Without Redis: write the partial answer at most this often, and readers poll this often.
DB_FLUSH_SECONDS = 0.2
DB_POLL_SECONDS = 0.1
# A reader checks the database this often while the stream is silent: the run may have ended without a final event
# reaching the stream (its key expired, or the worker died between the commit and the publish).
DB_CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class RunEvent:
    """One event of a run: ``type`` "token" (``text`` is the next piece of the answer), then exactly one "done"
    (``data``: finish_reason, prompt_tokens, completion_tokens, latency_ms, first_token_ms) or "error" (``data``:
    message). ``id`` resumes the stream: pass it as ``last_id`` to read what came after it."""

    id: str
    type: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.type in (DONE, ERROR)


def uses_redis() -> bool:
    return settings.BROKER_KIND in ("redis", "rediss")


@cache
def _client() -> Any:
    import redis

    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def _key(public_id: uuid.UUID | str) -> str:
    return f"openledger:inference:run:{public_id}"


def _public_id(run_id: uuid.UUID | str | int) -> uuid.UUID:
    if isinstance(run_id, int):
        from .models import InferenceRun

        return InferenceRun.objects.values_list("public_id", flat=True).get(pk=run_id)
    return run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))


def final_data(run: Any) -> dict[str, Any]:
    """The data of a finished run's final event, from its row."""
    if run.status == "failed":
        return {"message": run.error or "the run failed"}
    return {
        "finish_reason": run.finish_reason,
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "latency_ms": run.latency_ms,
        "first_token_ms": run.first_token_ms,
    }


class RunStreamWriter:
    """The worker's side: ``token`` for each text delta, then ``services.run_finish`` publishes the final event."""

    def __init__(self, *, run_id: int, public_id: uuid.UUID, retry: bool = False) -> None:
        self.run_id = run_id
        self.public_id = public_id
        self.answer = ""
        self._flushed = 0
        self._last_flush = 0.0
        # A retried run (its first worker was lost) regenerates the same tokens (greedy, or the seed fixed at the
        # first claim): what the first attempt already streamed is not streamed twice.
        self._published = 0
        # Redis went away mid-run: the rest of this run is written to its row, as without Redis, and readers (who
        # lost Redis too) poll the row.
        self._redis = uses_redis()
        if retry and self._redis:
            try:
                entries = _client().xrange(_key(public_id))
            except Exception as e:
                self._redis_lost(e)
            else:
                self._published = sum(len(f[b"text"].decode()) for _, f in entries if f[b"type"] == TOKEN.encode())

    def _redis_lost(self, error: Exception) -> None:
        logger.warning("run %s: Redis is unreachable (%s); streaming through the database", self.public_id, error)
        self._redis = False

    def token(self, text: str) -> None:
        if not text:
            return
        self.answer += text
        if self._redis:
            if len(self.answer) <= self._published:
                return
            text = self.answer[max(self._published, len(self.answer) - len(text)) :]
            try:
                client = _client()
                pipe = client.pipeline(transaction=False)
                pipe.xadd(_key(self.public_id), {"type": TOKEN, "text": text}, maxlen=STREAM_MAXLEN, approximate=True)
                pipe.expire(_key(self.public_id), settings.INFERENCE_STREAM_TTL_SECONDS)
                pipe.execute()
            except Exception as e:
                self._redis_lost(e)
            else:
                self._published = len(self.answer)
                return
        now = time.monotonic()
        if now - self._last_flush >= DB_FLUSH_SECONDS:
            self.flush()
            self._last_flush = now

    def flush(self) -> None:
        """Without Redis: write the answer so far to the row (only while the run is still running)."""
        if self._redis or self._flushed == len(self.answer):
            return
        from .models import InferenceRun

        InferenceRun.objects.filter(pk=self.run_id, status=InferenceRun.Status.RUNNING).update(answer=self.answer)
        self._flushed = len(self.answer)


def publish_final(*, public_id: uuid.UUID, type_: str, data: dict[str, Any]) -> None:
    """Append the final event (Redis only: in the database the finished row is the final event)."""
    if not uses_redis():
        return
    client = _client()
    pipe = client.pipeline(transaction=False)
    pipe.xadd(_key(public_id), {"type": type_, "data": json.dumps(data)}, maxlen=STREAM_MAXLEN, approximate=True)
    pipe.expire(_key(public_id), settings.INFERENCE_STREAM_TTL_SECONDS)
    pipe.execute()


def run_events(*, run_id: uuid.UUID | str | int, last_id: str = "0", timeout_s: float = 60.0) -> Iterator[RunEvent]:
    """The events of run ``run_id`` (its public id, or its primary key) after ``last_id`` ("0": from the start):
    token deltas as they are generated, then one final "done" or "error" event, after which iteration ends.

    Blocks while waiting for the next event. If ``timeout_s`` passes first, iteration ends without a final event:
    the caller may resume with the last id it saw. Raises InferenceRun.DoesNotExist for an unknown run.
    """
    from .models import InferenceRun

    public_id = _public_id(run_id)
    if not InferenceRun.objects.filter(public_id=public_id).exists():
        raise InferenceRun.DoesNotExist(f"no run {public_id}")
    if not uses_redis():
        yield from _db_events(public_id, last_id, timeout_s)
        return
    deadline = time.monotonic() + timeout_s
    progress = _Progress(delivered=0 if last_id in ("0", "0-0") else None)
    try:
        yield from _redis_events(public_id, last_id, timeout_s, progress)
    except Exception as e:  # redis.ConnectionError and kin: Redis went away; the run goes on without it
        if not is_redis_error(e):
            raise
        logger.warning("run %s: Redis is unreachable (%s); reading the run from the database", public_id, e)
        yield from _db_fallback_events(public_id, progress, max(0.0, deadline - time.monotonic()))


@dataclass
class _Progress:
    delivered: int | None  # characters of the answer delivered so far, when known
    last_id: str = "0"


def is_redis_error(error: Exception) -> bool:
    """Whether ``error`` is redis-py's (Redis unreachable, a connection lost): the caller falls back to the database."""
    import redis

    return isinstance(error, redis.RedisError)


def _db_fallback_events(public_id: uuid.UUID, progress: _Progress, timeout_s: float) -> Iterator[RunEvent]:
    """The rest of a run read from its row, once Redis went away: the worker then writes the answer there too."""
    if progress.delivered is None:  # resumed mid-stream: only the end can be told
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = _finished_row(public_id)
            if run is not None:
                kind = ERROR if run.status == "failed" else DONE
                yield RunEvent(id=progress.last_id, type=kind, data=final_data(run))
                return
            time.sleep(DB_POLL_SECONDS)
        return
    yield from _db_events(public_id, str(progress.delivered), timeout_s)


def _finished_row(public_id: uuid.UUID) -> Any | None:
    from .models import InferenceRun

    run = InferenceRun.objects.get(public_id=public_id)
    return run if run.is_finished else None


def _redis_events(public_id: uuid.UUID, last_id: str, timeout_s: float, progress: _Progress) -> Iterator[RunEvent]:
    client = _client()
    key = _key(public_id)
    deadline = time.monotonic() + timeout_s
    next_check = time.monotonic() + DB_CHECK_SECONDS
    delivered = progress.delivered
    # A run that ended before its stream expired reads from the stream; one whose stream is gone, from its row now.
    finished_seen = 1 if not client.exists(key) else 0
    if finished_seen:
        next_check = 0.0
    while (remaining := deadline - time.monotonic()) > 0:
        reply = client.xread({key: last_id}, count=512, block=max(1, int(min(remaining, 1.0) * 1000)))
        for _, entries in reply or []:
            for entry_id, fields in entries:
                last_id = entry_id.decode()
                kind = fields[b"type"].decode()
                if kind == TOKEN:
                    text = fields[b"text"].decode()
                    if delivered is not None:
                        delivered += len(text)
                        progress.delivered = delivered
                    progress.last_id = last_id
                    yield RunEvent(id=last_id, type=TOKEN, text=text)
                else:
                    # a worker that lost Redis mid-run wrote the rest of the answer only to the row
                    run = _finished_row(public_id) if delivered is not None and kind == DONE else None
                    if run is not None and len(run.answer) > delivered:
                        yield RunEvent(id=last_id, type=TOKEN, text=run.answer[delivered:])
                    yield RunEvent(id=last_id, type=kind, data=json.loads(fields[b"data"]))
                    return
        if reply or time.monotonic() < next_check:
            continue
        next_check = time.monotonic() + DB_CHECK_SECONDS
        run = _finished_row(public_id)
        if run is None:
            continue
        # The run is over but its final event has not come: give the publish one more round, then answer from the row.
        finished_seen += 1
        if finished_seen < 2 and client.exists(key):
            continue
        if run.status == "succeeded" and delivered is not None and len(run.answer) > delivered:
            yield RunEvent(id=last_id, type=TOKEN, text=run.answer[delivered:])
        yield RunEvent(id=last_id, type=ERROR if run.status == "failed" else DONE, data=final_data(run))
        return


def _db_events(public_id: uuid.UUID, last_id: str, timeout_s: float) -> Iterator[RunEvent]:
    from .models import InferenceRun

    try:
        offset = int(last_id.split("-")[0])
    except ValueError:
        offset = 0
    deadline = time.monotonic() + timeout_s
    while True:
        run = InferenceRun.objects.only(
            "status", "answer", "error", "finish_reason", "prompt_tokens", "completion_tokens", "latency_ms",
            "first_token_ms",
        ).get(public_id=public_id)  # fmt: skip
        if len(run.answer) > offset:
            text, offset = run.answer[offset:], len(run.answer)
            yield RunEvent(id=str(offset), type=TOKEN, text=text)
        if run.is_finished:
            yield RunEvent(id=str(offset), type=ERROR if run.status == "failed" else DONE, data=final_data(run))
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(DB_POLL_SECONDS)

"""Per-run event streams: the worker publishes a run's text as it is generated; web views read it back.

With Redis as the broker (``settings.BROKER_KIND == "redis"``) a run's events go to a Redis Stream (XADD with a
length cap, the key expiring after INFERENCE_STREAM_TTL_SECONDS), read with blocking XREAD. Without Redis the
database is the stream: the worker writes the run's partial answer every few tokens and readers poll the row, the
event id being the length of the answer already delivered. Both give the same reader API: ``run_events`` for sync
callers, and ``arun_events`` for the web server's streaming responses, which waits without holding a thread (an awaited
XREAD, or ``asyncio.sleep`` between polls), so that open streams never starve the pages (issue #11, item 6).

The final event is published after the run's row is committed (see ``services.run_finish``), so a reader that sees
"done" or "error" finds the finished row in the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import redis
import redis.asyncio
from asgiref.sync import sync_to_async
from django.conf import settings

from .models import InferenceRun

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


_client_lock = threading.Lock()


@cache
def _client_made() -> Any:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def _client() -> Any:
    """The process's one Redis client (thread-safe: its connection pool hands each thread a connection of its own).
    Made under a lock: ``functools.cache`` alone lets threads that miss together each make one, and a client
    dropped that way closes its own connection pool when collected, under a pipeline another thread is still
    running on it (a Redis "Bad file descriptor" or "I/O operation on closed file" error at the first burst of
    concurrent runs, seen with 32 threads submitting)."""
    with _client_lock:
        return _client_made()


def _key(public_id: uuid.UUID | str) -> str:
    return f"openledger:inference:run:{public_id}"


def _public_id(run_id: uuid.UUID | str | int) -> uuid.UUID:
    if isinstance(run_id, int):
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
    public_id = _existing_public_id(run_id)
    if not uses_redis():
        yield from _db_events(public_id, last_id, timeout_s)
        return
    deadline = time.monotonic() + timeout_s
    progress = _Progress.starting_at(last_id)
    try:
        yield from _redis_events(public_id, timeout_s, progress)
    except Exception as e:  # Redis went away mid-stream; the run goes on without it, and so does its reader
        if not is_redis_error(e):
            raise
        _redis_lost(public_id, e)
        yield from _db_fallback_events(public_id, progress, max(0.0, deadline - time.monotonic()))


async def arun_events(
    *, run_id: uuid.UUID | str | int, last_id: str = "0", timeout_s: float = 60.0
) -> AsyncIterator[RunEvent]:
    """``run_events`` for async code (the streaming views): the same events, the same ids, the same end; waiting
    holds no thread. Close it (``contextlib.aclosing``) when stopping early, so that its Redis connection goes."""
    public_id = await sync_to_async(_existing_public_id)(run_id)
    if not uses_redis():
        async with aclosing(_adb_events(public_id, last_id, timeout_s)) as events:
            async for event in events:
                yield event
        return
    deadline = time.monotonic() + timeout_s
    progress = _Progress.starting_at(last_id)
    try:
        async with aclosing(_aredis_events(public_id, timeout_s, progress)) as events:
            async for event in events:
                yield event
    except Exception as e:  # as in run_events
        if not is_redis_error(e):
            raise
        _redis_lost(public_id, e)
        remaining = max(0.0, deadline - time.monotonic())
        async with aclosing(_adb_fallback_events(public_id, progress, remaining)) as fallback:
            async for event in fallback:
                yield event


def _existing_public_id(run_id: uuid.UUID | str | int) -> uuid.UUID:
    public_id = _public_id(run_id)
    if not InferenceRun.objects.filter(public_id=public_id).exists():
        raise InferenceRun.DoesNotExist(f"no run {public_id}")
    return public_id


@dataclass
class _Progress:
    """How far a reader got in a run's Redis stream, so that it can go on from the row if Redis goes away."""

    delivered: int | None  # characters of the answer delivered so far, when known
    last_id: str = "0"

    @classmethod
    def starting_at(cls, last_id: str) -> _Progress:
        """A reader resuming after ``last_id``: its position in the answer is known only from the start."""
        return cls(delivered=0 if last_id in ("0", "0-0") else None, last_id=last_id)


def is_redis_error(error: BaseException) -> bool:
    """Whether ``error`` is redis-py's (Redis unreachable, a connection lost): the caller falls back to the database."""
    return isinstance(error, redis.RedisError)


def _redis_lost(public_id: uuid.UUID, error: BaseException) -> None:
    logger.warning("run %s: Redis is unreachable (%s); reading the run from the database", public_id, error)


def _fallback_start(progress: _Progress) -> str | None:
    """Where a reader that lost Redis goes on in the row: the answer offset when known, else None (only the end)."""
    return None if progress.delivered is None else str(progress.delivered)


def _db_fallback_events(public_id: uuid.UUID, progress: _Progress, timeout_s: float) -> Iterator[RunEvent]:
    """The rest of a run read from its row, once Redis went away: the worker then writes the answer there too."""
    if (start := _fallback_start(progress)) is not None:
        yield from _db_events(public_id, start, timeout_s)
        return
    deadline = time.monotonic() + timeout_s  # resumed mid-stream: only the end can be told
    while time.monotonic() < deadline:
        if (run := _finished_row(public_id)) is not None:
            yield from _row_ending(run, progress.last_id, None)
            return
        time.sleep(DB_POLL_SECONDS)


async def _adb_fallback_events(public_id: uuid.UUID, progress: _Progress, timeout_s: float) -> AsyncIterator[RunEvent]:
    if (start := _fallback_start(progress)) is not None:
        async with aclosing(_adb_events(public_id, start, timeout_s)) as events:
            async for event in events:
                yield event
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (run := await sync_to_async(_finished_row)(public_id)) is not None:
            for event in _row_ending(run, progress.last_id, None):
                yield event
            return
        await asyncio.sleep(DB_POLL_SECONDS)


def _finished_row(public_id: uuid.UUID) -> Any | None:
    run = InferenceRun.objects.get(public_id=public_id)
    return run if run.is_finished else None


def _entry_event(entry_id: bytes, fields: dict[bytes, bytes]) -> RunEvent:
    kind = fields[b"type"].decode()
    if kind == TOKEN:
        return RunEvent(id=entry_id.decode(), type=TOKEN, text=fields[b"text"].decode())
    return RunEvent(id=entry_id.decode(), type=kind, data=json.loads(fields[b"data"]))


def _row_tail(run: Any, last_id: str, delivered: int | None) -> list[RunEvent]:
    """The answer's text past ``delivered`` that only the row has (none when the position is unknown): a worker that
    lost Redis mid-run wrote the rest of the answer to the row, and published its final event once Redis was back."""
    if run is not None and run.status == "succeeded" and delivered is not None and len(run.answer) > delivered:
        return [RunEvent(id=last_id, type=TOKEN, text=run.answer[delivered:])]
    return []


def _row_ending(run: Any, last_id: str, delivered: int | None) -> list[RunEvent]:
    """The end of a finished run whose final event never reached its stream: the rest of the answer when the reader's
    position in it is known, then the final event, both from the row."""
    final = RunEvent(id=last_id, type=ERROR if run.status == "failed" else DONE, data=final_data(run))
    return [*_row_tail(run, last_id, delivered), final]


def _advance(progress: _Progress, entry_id: bytes, fields: dict[bytes, bytes]) -> RunEvent:
    """The event of one stream entry, with the reader's ``progress`` moved past it."""
    event = _entry_event(entry_id, fields)
    progress.last_id = event.id
    if progress.delivered is not None:
        progress.delivered += len(event.text)
    return event


class _Follow:
    """When a reader of a run's Redis stream reads what, apart from the reading itself: the sync and the async reader
    share it and do only the I/O."""

    def __init__(self, timeout_s: float, *, stream_exists: bool) -> None:
        self.deadline = time.monotonic() + timeout_s
        # A run that ended before its stream expired reads from the stream; one whose stream is gone, from its row now.
        self.finished_seen = 0 if stream_exists else 1
        self.next_check = time.monotonic() + DB_CHECK_SECONDS if stream_exists else 0.0

    def block_ms(self) -> int | None:
        """How long the next XREAD may block, in milliseconds; None once the time is up."""
        remaining = self.deadline - time.monotonic()
        return max(1, int(min(remaining, 1.0) * 1000)) if remaining > 0 else None

    def row_due(self, reply: Any) -> bool:
        """Whether to look at the run's row after a read that brought ``reply``: when nothing came for a while."""
        if reply or time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + DB_CHECK_SECONDS
        return True

    def seen_finished(self) -> bool:
        """Count one more sight of the finished row; True when it was seen before or the stream was already gone.

        The run is over but its final event has not come: give the publish one more round, then answer from the row.
        """
        self.finished_seen += 1
        return self.finished_seen >= 2


def _reply_events(progress: _Progress, reply: Any) -> Iterator[RunEvent]:
    """The events of one XREAD reply, in order, each moving ``progress`` past it."""
    for _, entries in reply or []:
        for entry_id, fields in entries:
            yield _advance(progress, entry_id, fields)


def _needs_tail(event: RunEvent, progress: _Progress) -> bool:
    # the row may hold text that the stream never got (see _row_tail)
    return event.type == DONE and progress.delivered is not None


def _redis_events(public_id: uuid.UUID, timeout_s: float, progress: _Progress) -> Iterator[RunEvent]:
    """The run's events from its Redis stream, from ``progress.last_id`` on, keeping ``progress`` up to date."""
    client = _client()
    key = _key(public_id)
    follow = _Follow(timeout_s, stream_exists=bool(client.exists(key)))
    while (block := follow.block_ms()) is not None:
        reply = client.xread({key: progress.last_id}, count=512, block=block)
        for event in _reply_events(progress, reply):
            if _needs_tail(event, progress):
                yield from _row_tail(_finished_row(public_id), event.id, progress.delivered)
            yield event
            if event.is_final:
                return
        if not follow.row_due(reply) or (run := _finished_row(public_id)) is None:
            continue
        if not follow.seen_finished() and client.exists(key):
            continue
        yield from _row_ending(run, progress.last_id, progress.delivered)
        return


async def _aredis_events(public_id: uuid.UUID, timeout_s: float, progress: _Progress) -> AsyncIterator[RunEvent]:
    """``_redis_events`` with redis.asyncio: a connection of its own for the blocking XREAD, closed at the end."""
    client = redis.asyncio.Redis.from_url(settings.CELERY_BROKER_URL)
    finished_row = sync_to_async(_finished_row)
    try:
        key = _key(public_id)
        follow = _Follow(timeout_s, stream_exists=bool(await client.exists(key)))
        while (block := follow.block_ms()) is not None:
            reply = await client.xread({key: progress.last_id}, count=512, block=block)
            for event in _reply_events(progress, reply):
                if _needs_tail(event, progress):
                    for tail in _row_tail(await finished_row(public_id), event.id, progress.delivered):
                        yield tail
                yield event
                if event.is_final:
                    return
            if not follow.row_due(reply) or (run := await finished_row(public_id)) is None:
                continue
            if not follow.seen_finished() and await client.exists(key):
                continue
            for event in _row_ending(run, progress.last_id, progress.delivered):
                yield event
            return
    finally:
        await client.aclose()


_ROW_FIELDS = ("status", "answer", "error", "finish_reason", "prompt_tokens", "completion_tokens", "latency_ms",
               "first_token_ms")  # fmt: skip


def _offset(last_id: str) -> int:
    try:
        return int(last_id.split("-")[0])
    except ValueError:
        return 0


def _row_events(run: Any, offset: int) -> tuple[list[RunEvent], int]:
    """What a poll of the row adds after ``offset`` characters: the new text, then the final event if it ended."""
    events = []
    if len(run.answer) > offset:
        text, offset = run.answer[offset:], len(run.answer)
        events.append(RunEvent(id=str(offset), type=TOKEN, text=text))
    if run.is_finished:
        events.append(RunEvent(id=str(offset), type=ERROR if run.status == "failed" else DONE, data=final_data(run)))
    return events, offset


def _db_events(public_id: uuid.UUID, last_id: str, timeout_s: float) -> Iterator[RunEvent]:
    offset = _offset(last_id)
    deadline = time.monotonic() + timeout_s
    while True:
        run = InferenceRun.objects.only(*_ROW_FIELDS).get(public_id=public_id)
        events, offset = _row_events(run, offset)
        yield from events
        if run.is_finished or time.monotonic() >= deadline:
            return
        time.sleep(DB_POLL_SECONDS)


class _SharedPolls:
    """The rows of the runs that this process's streams follow without Redis, read by one query per DB_POLL_SECONDS
    for all of them rather than one per stream: 64 streams would otherwise poll 640 times a second. The query is made
    by whichever reader first needs a fresher row, in its own request's thread; the others wait for it and share it."""

    def __init__(self) -> None:
        self.followed: Counter[uuid.UUID] = Counter()
        self.rows: dict[uuid.UUID, Any] = {}
        self.polled_at = -math.inf
        self.lock = asyncio.Lock()

    async def row(self, public_id: uuid.UUID, *, newer_than: float) -> tuple[Any, float]:
        """The run's row as read by a poll made after ``newer_than`` (a time.monotonic()), and that poll's time."""
        async with self.lock:
            if self.polled_at <= newer_than or public_id not in self.rows:
                started = time.monotonic()
                self.rows = await sync_to_async(_rows_of)([*self.followed, public_id])
                self.polled_at = started
            polled_at = self.polled_at
            if public_id not in self.rows:
                raise InferenceRun.DoesNotExist(f"no run {public_id}")
            return self.rows[public_id], polled_at


_shared_polls: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SharedPolls] = weakref.WeakKeyDictionary()


def _rows_of(public_ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    rows = InferenceRun.objects.only("public_id", *_ROW_FIELDS).filter(public_id__in=public_ids)
    return {run.public_id: run for run in rows}


async def _adb_events(public_id: uuid.UUID, last_id: str, timeout_s: float) -> AsyncIterator[RunEvent]:
    polls = _shared_polls.setdefault(asyncio.get_running_loop(), _SharedPolls())
    offset = _offset(last_id)
    deadline = time.monotonic() + timeout_s
    seen_poll = -math.inf
    polls.followed[public_id] += 1
    try:
        while True:
            run, seen_poll = await polls.row(public_id, newer_than=seen_poll)
            events, offset = _row_events(run, offset)
            for event in events:
                yield event
            if run.is_finished or time.monotonic() >= deadline:
                return
            await asyncio.sleep(DB_POLL_SECONDS)
    finally:
        polls.followed[public_id] -= 1
        if polls.followed[public_id] <= 0:
            del polls.followed[public_id]

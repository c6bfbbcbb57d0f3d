"""Continuous batching in the serving engine, against the real bundled model: requests join a running batch between
decode steps, give the tokens they give alone, can be cancelled, and fail alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.engine import Engine, EngineClosed, GenerationHandle, GenerationRequest
from inference.testing import make_synthetic_adapter, release_synthetic_models
from inference.tests.test_engine import BASE_MODEL_DIR, ask

pytestmark = pytest.mark.slow

# Long enough that the batch is still decoding when everything a test submits after it is done, and always cancelled.
LONG = 400


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = make_synthetic_adapter(BASE_MODEL_DIR, tmp_path_factory.mktemp("adapters") / "qv", seed=3)
    release_synthetic_models()
    engine = Engine(BASE_MODEL_DIR, max_adapters=4, batch_window_ms=20, max_batch_size=8)
    engine.register_adapter("qv", folder)
    yield engine
    engine.close()
    torch.set_num_threads(threads)


def start_long_batch(engine: Engine) -> tuple[GenerationHandle, Iterator[str]]:
    """A running batch: one long request, submitted and streaming."""
    handle = engine.submit(ask(None, "Tell me a long story about a dragon.", max_new_tokens=LONG, ignore_eos=True))
    stream = iter(handle)
    next(stream)
    return handle, stream


def test_a_request_submitted_while_a_batch_decodes_joins_it_and_gives_its_tokens_alone(engine: Engine) -> None:
    # given a batch that is decoding, and requests shorter and longer than its cache (the last pads the running rows)
    requests = [
        ask("qv"),
        ask(None, "Name a colour."),
        ask(None, "What is the capital of France?"),
        ask("qv", "Repeat after me: " + "the quick brown fox jumps over the lazy dog, " * 30),
    ]
    alone = [engine.generate(r) for r in requests]
    before = engine.state()
    long, _ = start_long_batch(engine)
    # when requests arrive while it decodes
    results = [h.result(timeout=120) for h in [engine.submit(r) for r in requests]]
    # then they joined it, ran to their end before it ended, and gave the tokens they give alone
    assert not long.done()
    after = engine.state()
    assert after["joined"] == before["joined"] + len(requests)
    assert after["batches"] == before["batches"] + 1
    assert all(r.ok for r in results)
    assert [r.token_ids for r in results] == [r.token_ids for r in alone]
    assert results[2].text.startswith("The capital of France is Paris")
    long.cancel()
    # and the long row's tokens, with rows joining and leaving around it, are its tokens alone
    tokens = long.result(timeout=60).token_ids
    by_itself = engine.generate(ask(None, "Tell me a long story about a dragon.", max_new_tokens=len(tokens)))
    assert tokens == by_itself.token_ids[: len(tokens)]


def test_a_request_arriving_while_another_joins_is_prefilled_before_the_next_decode_step(engine: Engine) -> None:
    # given a running batch and two adapters only a resolver knows (the folder of "qv"): resolving the first submits
    # a request for the second, which so arrives while the first is being admitted; each resolution notes how many
    # forward passes (prefills and decode steps) the engine had run by then
    folder = engine._paths["qv"]
    alone = engine.generate(ask("qv"))
    forwards: dict[str, int] = {}
    arrived: list[GenerationHandle] = []

    def resolver(adapter_id: str) -> Path:
        forwards[adapter_id] = engine.state()["steps"]
        if adapter_id == "late-1":
            arrived.append(engine.submit(ask("late-2")))
        return folder

    engine.adapter_resolver = resolver
    try:
        long, _ = start_long_batch(engine)
        first = engine.submit(ask("late-1")).result(timeout=120)
        second = arrived[0].result(timeout=120)
    finally:
        engine.adapter_resolver = None
        for adapter_id in ("late-1", "late-2"):
            engine.unload_adapter(adapter_id)
    # then the second was prefilled right after the first, with no decode step of the running rows between them
    assert forwards["late-2"] == forwards["late-1"] + 1
    # and both joined the batch and gave the tokens they give alone
    assert first.ok and second.ok
    assert first.token_ids == second.token_ids == alone.token_ids
    assert not long.done()
    long.cancel()
    assert long.result(timeout=60).finish_reason == "cancelled"


def test_a_cancelled_row_leaves_the_batch_and_the_others_go_on(engine: Engine) -> None:
    # given a running batch of a long row and a short one
    long, stream = start_long_batch(engine)
    short = engine.submit(ask(None, "Say hello.", max_new_tokens=12))
    # when the long row is cancelled
    long.cancel()
    # then it ends with what it had streamed, and the short row finishes as it would alone
    streamed = "".join(stream)
    result = long.result(timeout=60)
    assert result.finish_reason == "cancelled" and result.ok
    assert 0 < result.completion_tokens < LONG
    assert result.text.endswith(streamed) and result.text
    assert short.result(timeout=120).token_ids == engine.generate(ask(None, "Say hello.", max_new_tokens=12)).token_ids
    # and cancelling a finished request changes nothing
    long.cancel()
    assert long.result().finish_reason == "cancelled"
    assert short.result().finish_reason in ("stop", "length")


def test_a_request_cancelled_before_it_runs_is_answered_at_once_and_never_runs(engine: Engine) -> None:
    handle = GenerationHandle(ask(None))
    handle.cancel()
    assert handle.done() and handle.result().finish_reason == "cancelled"
    assert list(handle) == []
    assert engine._prepare(handle) is None  # a batch never takes it
    assert handle.result().completion_tokens == 0


def test_a_joining_request_that_fails_fails_alone_and_the_running_batch_goes_on(engine: Engine, tmp_path: Path) -> None:
    # given a running batch (and what a good request gives alone, asked before it, so nothing competes with it)
    good = ask(None, "What is 2+2?")
    alone = engine.generate(good)
    long, _ = start_long_batch(engine)
    # when requests that cannot run join it beside a good one
    handles = [
        engine.submit(GenerationRequest(adapter_id="gone", adapter_path=tmp_path / "nothing", prompt="hi")),
        engine.submit(ask(None, "Hello", max_new_tokens=engine.max_context_tokens)),
        engine.submit(good),
    ]
    missing, too_long, fine = (h.result(timeout=120) for h in handles)
    # then each fails with its own reason, the good one is served, and the batch decodes on
    assert missing.finish_reason == "error" and "lacks adapter_config.json" in missing.error
    assert too_long.finish_reason == "error" and "exceeds the context" in too_long.error
    assert fine.ok and fine.token_ids == alone.token_ids
    # and the running batch went on: it is still decoding (cancelled now), or on a slow machine it has already run
    # to its length; either way it did not fail with the requests that joined it
    long.cancel()
    ended = long.result(timeout=120)
    assert ended.error is None and ended.finish_reason in ("cancelled", "length"), ended


def test_closing_finishes_the_running_rows_and_answers_every_queued_request() -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # given a one-row engine: whatever arrives while it decodes waits in the queue
    engine = Engine(BASE_MODEL_DIR, batch_window_ms=0, max_batch_size=1)
    try:
        running = engine.submit(ask(None, "Tell me about dragons.", max_new_tokens=24, ignore_eos=True))
        next(iter(running))
        queued = [engine.submit(ask(None)) for _ in range(3)]
        # when it closes
        engine.close(timeout=120)
        # then the running row ran to its end, each queued request has an error answer, and nothing more is taken
        assert running.result(timeout=1).completion_tokens == 24
        for handle in queued:
            assert handle.result(timeout=1).finish_reason == "error"
            assert "closed" in handle.result().error
        with pytest.raises(EngineClosed):
            engine.submit(ask(None))
    finally:
        engine.close()
        torch.set_num_threads(threads)

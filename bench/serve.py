"""Serving many adapters on one base: the engine's mixed batches against grouped batches and the naive way.

Builds 128 synthetic attention-only LoRA adapters (peft's own format and shapes: q_proj/v_proj, rank 8, random
non-zero B) for the bundled SmolLM2-135M-Instruct, then, in one engine, with the same prompts and the same number of
generated tokens per request (end tokens ignored, so every mode generates exactly the same count):
  (a) mixed: batches whose rows use different adapters (request i uses adapter i mod N);
  (b) grouped: batches of the same size whose rows all use one adapter (the best case for a server that can only
      batch requests of one adapter);
  (c) naive: per request, the base loaded from disk, the adapter applied with peft and merged (merge_and_unload),
      the request generated alone. It does not depend on N and costs seconds a request, so it runs one request
      (adapter i mod 32) after each round of (a) and (b), in a worker process of its own (so its models never count
      in the engine's memory), after one untimed warm-up request as the engine gets one; its tokens/s stands for
      every N.
for N = 1, 8, 32 and 128 adapters, and prints tokens/s, (a)/(b) and (a)/(c). Tokens/s are given per second of wall
time and per second of the measuring process's CPU time; on a shared machine the ratios use CPU time, which other
processes do not inflate (with one torch thread the two agree on an idle machine). The three modes take turns, so
that all see the same load from whatever else runs on the machine. Then the adapter cache: cold load (file in the
page cache, not yet in the engine) and warm load (a cache hit) of an adapter against peft's `load_adapter`, the
process memory per cached adapter over its file size, and the extra memory of serving all 128. Last, continuous
batching: the time to first token of 16 requests arriving one by one while a batch decodes (they join it between
decode steps) over a single request's on the idle engine (``ttft_concurrent_over_single``).

The honest baseline (issue 19, item 5): peft itself serving a mixed batch, one PeftModel with the same 32 adapters
loaded and ``generate(..., adapter_names=[...])`` on the same prompts, rows and adapters as the engine's mixed batches
at N = 32, greedy, the same 16 new tokens; in a worker process of its own, one peft batch after each round at N = 32,
so it sees the same load as the engine's batches beside it.

A thousand adapters (issue 19, item 2): 872 more adapters copied from the first with new seeded weights
(``inference.testing.copy_synthetic_adapter``: same config, names and shapes, in seconds), then with the hot tier
bounded at 384 MiB of adapter tensors (about 218 of these adapters) and a warm tier on local disk, batches of 32 that
touch all 1,000 ids round-robin, 8 new tokens per request: a first pass over all of them (each read from its folder,
the evicted ones written warm), then part of a second pass (read back from the warm tier); after every fourth such
batch one mixed batch over the first 32 adapters (all hot), so the two throughputs are measured side by side.
Figures: adapters served, the extra memory over the base engine, tokens/s at 1,000 over tokens/s at 32, the tier
counters, and the median load of an adapter from the warm tier against one from its folder.

Run from the repository root: .venv/bin/python bench/serve.py (CPU: one torch thread unless BENCH_THREADS is set,
because the machine's cores are shared and spinning threads make the numbers noisy).
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASE = Path(os.getenv("DEFAULT_BASE_MODEL_DIR", ROOT / "var/models/smollm2-135m-instruct"))
COUNTS = (1, 8, 32, 128)
ADAPTERS_AT_SCALE = 1000
# The hot tier's bound: every adapter of the runs at COUNTS fits, about 218 of the thousand do (more than the 160 a
# reference batch's adapters need to stay hot between two reference batches).
HOT_BYTES = 384 << 20
WARM_BYTES = 4 << 30
# Batches of the second pass over the thousand, and how often a mixed batch of the first 32 runs beside them.
SECOND_PASS_BATCHES = 4
REFERENCE_EVERY = 4
# Fewer new tokens per request at scale (both the thousand's batches and the reference batches beside them), so the
# part runs in minutes on a shared machine; fewer tokens also spread each adapter load over less work, the harder case.
SCALE_NEW_TOKENS = 8
# 32 concurrent requests: at N = 32 every adapter has one row in each mixed batch
BATCH = 32
BATCHES_PER_MODE = 3
NEW_TOKENS = 16
TARGETS = ("q_proj", "v_proj")
RANK = 8
# A short system prompt instead of the template's default, so that decoding (where adapters differ), not prefill,
# dominates the time.
SYSTEM = "Answer briefly."
PROMPTS = [
    "What is the capital of France?",
    "Name three colours.",
    "What is 2+2?",
    "Say hello politely.",
    "Why is the sky blue?",
    "Give me a word that rhymes with cat.",
    "What do bees make?",
    "How many legs does a spider have?",
    "What is water made of?",
    "Name a large animal.",
    "What is the opposite of hot?",
    "Suggest a name for a dog.",
    "What day comes after Monday?",
    "What is a triangle?",
    "Where do penguins live?",
    "What is the boiling point of water?",
    "Name a fruit that is yellow.",
    "What is the largest planet?",
    "How many days are in a week?",
    "What colour is grass?",
    "Name a musical instrument.",
    "What do cows drink?",
    "Give a synonym for happy.",
    "What is ice?",
    "Name a country in Asia.",
    "What is the sun?",
    "How many wheels does a bicycle have?",
    "What do plants need to grow?",
    "Name a month with 30 days.",
    "What is a noun?",
    "Which animal says moo?",
    "What is 10 minus 3?",
]


def make_adapters(folder: str, count: int, total: int) -> None:
    """In a child process, so the peft model used to make them does not stay in the measured process's memory:
    ``count`` adapters made with peft, and copies with new weights up to ``total``."""
    sys.path.insert(0, str(ROOT))
    from inference.testing import copy_synthetic_adapter, make_synthetic_adapter

    for i in range(count):
        make_synthetic_adapter(BASE, Path(folder) / adapter_name(i), rank=RANK, targets=TARGETS, seed=i)
    for i in range(count, total):
        copy_synthetic_adapter(Path(folder) / adapter_name(0), Path(folder) / adapter_name(i), seed=i)


def adapter_name(i: int) -> str:
    return f"a{i:03d}"


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def requests_for(mode: str, n: int) -> list[list]:
    from inference.engine import GenerationRequest

    def request(prompt: str, adapter: int) -> GenerationRequest:
        return GenerationRequest(
            adapter_id=adapter_name(adapter), messages=messages(prompt), max_new_tokens=NEW_TOKENS, ignore_eos=True
        )

    batches = []
    for b in range(BATCHES_PER_MODE):
        if mode == "mixed":
            batches.append([request(p, a) for p, a in zip(PROMPTS, mixed_adapters(b, n), strict=True)])
        else:
            batches.append([request(p, b % n) for p in PROMPTS[:BATCH]])
    return batches


def mixed_adapters(b: int, n: int) -> list[int]:
    """The adapter of each row of mixed batch ``b`` over ``n`` adapters. The odd stride spreads a mixed batch's rows
    over the adapters: all distinct when there are enough of them."""
    return [(b * BATCH + i) * 7919 % n for i in range(BATCH)]


def engine_tokens_per_s(engine, n: int, naive, peft=None) -> dict[str, tuple[float, float]]:
    """Tokens per second of wall time and of this process's CPU time, per mode. Mixed and grouped batches take turns
    (which goes first alternates), and a naive request (and a peft mixed batch, when given) follows each round, so
    that all see the same load from whatever else runs on the machine."""
    plans = {mode: requests_for(mode, n) for mode in ("mixed", "grouped")}
    spent = {mode: [0, 0.0, 0.0] for mode in plans}
    for b in range(BATCHES_PER_MODE):
        for mode in sorted(plans, reverse=b % 2 == 1):
            wall, cpu = time.perf_counter(), time.process_time()
            results = engine.generate_batch(plans[mode][b])
            if not all(r.ok for r in results):
                raise SystemExit(f"{mode} batch failed: {[r.error for r in results if not r.ok]}")
            spent[mode][0] += sum(r.completion_tokens for r in results)
            spent[mode][1] += time.perf_counter() - wall
            spent[mode][2] += time.process_time() - cpu
        naive.request()
        if peft is not None:
            peft.request(b)
    return {mode: (tokens / wall, tokens / cpu) for mode, (tokens, wall, cpu) in spent.items()}


NAIVE_ADAPTERS = 32


def naive_worker(connection, folder: str) -> None:
    """The naive way, in a process of its own: for request i, the base loaded from disk, adapter i mod 32 applied
    with peft and merged, then the request generated alone. Answers (tokens, wall s, CPU s) per request."""
    sys.path.insert(0, str(ROOT))
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(int(os.getenv("BENCH_THREADS", "1")))
    tokenizer = AutoTokenizer.from_pretrained(BASE, local_files_only=True)
    while (i := connection.recv()) is not None:
        started, cpu = time.perf_counter(), time.process_time()
        base = AutoModelForCausalLM.from_pretrained(BASE, local_files_only=True, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, Path(folder) / f"a{i % NAIVE_ADAPTERS:03d}").merge_and_unload().eval()
        prompt = tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.inference_mode():
            out = model.generate(**prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        tokens = out.shape[1] - prompt["input_ids"].shape[1]
        del model, base
        gc.collect()
        connection.send((tokens, time.perf_counter() - started, time.process_time() - cpu))


class Naive:
    """Drives ``naive_worker``: the first request warms it up and is not counted."""

    def __init__(self, folder: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=naive_worker, args=(child, str(folder)), daemon=True)
        self._process.start()
        self._next = 0
        self.tokens, self.wall, self.cpu = 0, 0.0, 0.0
        self._ask()

    def _ask(self) -> tuple[int, float, float]:
        self._connection.send(self._next)
        self._next += 1
        return self._connection.recv()

    def request(self) -> None:
        tokens, wall, cpu = self._ask()
        self.tokens += tokens
        self.wall += wall
        self.cpu += cpu

    def close(self) -> None:
        self._connection.send(None)
        self._process.join()


PEFT_ADAPTERS = 32


def peft_mixed_worker(connection, folder: str) -> None:
    """peft's own mixed batches, in a process of its own: one PeftModel with adapters a000-a031 loaded; for batch b,
    the rows and adapters of the engine's mixed batch b at N = 32, generated in one ``generate`` call with
    ``adapter_names``, greedy. Answers (tokens, wall s, CPU s) per batch."""
    sys.path.insert(0, str(ROOT))
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(int(os.getenv("BENCH_THREADS", "1")))
    tokenizer = AutoTokenizer.from_pretrained(BASE, local_files_only=True, padding_side="left")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = AutoModelForCausalLM.from_pretrained(BASE, local_files_only=True, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, Path(folder) / adapter_name(0), adapter_name=adapter_name(0))
    for i in range(1, PEFT_ADAPTERS):
        model.load_adapter(Path(folder) / adapter_name(i), adapter_name=adapter_name(i))
    model.eval()
    texts = [tokenizer.apply_chat_template(messages(p), add_generation_prompt=True, tokenize=False) for p in PROMPTS]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    def generate(b: int) -> tuple[int, float, float]:
        names = [adapter_name(a) for a in mixed_adapters(b, PEFT_ADAPTERS)]
        started, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                adapter_names=names,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        tokens = (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0]
        return tokens, time.perf_counter() - started, time.process_time() - cpu

    generate(BATCHES_PER_MODE)  # warm-up, not counted (the engine gets one too)
    connection.send("ready")
    while (b := connection.recv()) is not None:
        connection.send(generate(b))


class PeftMixed:
    """Drives ``peft_mixed_worker``."""

    def __init__(self, folder: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=peft_mixed_worker, args=(child, str(folder)), daemon=True)
        self._process.start()
        self.batches, self.tokens, self.wall, self.cpu = 0, 0, 0.0, 0.0
        # the warm-up ends before the engine's measurements begin, so it takes no CPU from them
        if self._connection.recv() != "ready":
            raise SystemExit("the peft mixed-batch worker did not start")

    def request(self, b: int) -> None:
        self._connection.send(b)
        tokens, wall, cpu = self._connection.recv()
        self.batches += 1
        self.tokens += tokens
        self.wall += wall
        self.cpu += cpu

    def close(self) -> None:
        self._connection.send(None)
        self._process.join()


def at_scale(engine) -> dict[str, float]:
    """The thousand adapters round-robin in batches of 32, a mixed batch over the first 32 after every fourth; the
    first pass reads each adapter from its folder, the second from the warm tier."""
    from inference.engine import GenerationRequest

    def batch(adapters: list[int]) -> list[GenerationRequest]:
        return [
            GenerationRequest(
                adapter_id=adapter_name(a), messages=messages(p), max_new_tokens=SCALE_NEW_TOKENS, ignore_eos=True
            )
            for p, a in zip(PROMPTS, adapters, strict=True)
        ]

    def timed(requests: list[GenerationRequest], spent: list) -> set[str]:
        wall, cpu = time.perf_counter(), time.process_time()
        results = engine.generate_batch(requests)
        if not all(r.ok for r in results):
            raise SystemExit(f"a batch failed: {[r.error for r in results if not r.ok]}")
        spent[0] += sum(r.completion_tokens for r in results)
        spent[1] += time.perf_counter() - wall
        spent[2] += time.process_time() - cpu
        return {r.adapter_id for r in results}

    first_pass = -(-ADAPTERS_AT_SCALE // BATCH)
    spent = {"first": [0, 0.0, 0.0], "second": [0, 0.0, 0.0], "reference": [0, 0.0, 0.0]}
    served: set[str] = set()
    for k in range(first_pass + SECOND_PASS_BATCHES):
        adapters = [(k * BATCH + i) % ADAPTERS_AT_SCALE for i in range(BATCH)]
        served |= timed(batch(adapters), spent["first" if k < first_pass else "second"])
        if k % REFERENCE_EVERY == REFERENCE_EVERY - 1:
            timed(batch(mixed_adapters(k, 32)), spent["reference"])
        if k == first_pass - 1:
            print(f"  first pass over {ADAPTERS_AT_SCALE} adapters: {engine.state()['tiers']}")
    rates = {name: (tokens / wall, tokens / cpu) for name, (tokens, wall, cpu) in spent.items()}
    scale_tokens = spent["first"][0] + spent["second"][0]
    scale_cpu = spent["first"][2] + spent["second"][2]
    scale_wall = spent["first"][1] + spent["second"][1]
    return {
        "served": len(served),
        "scale": (scale_tokens / scale_wall, scale_tokens / scale_cpu),
        **rates,
    }


def tier_load_ms(engine, ids: list[str]) -> float:
    """Median ms to load each of ``ids`` (none of them hot, with room for all) into memory."""
    times = []
    for adapter_id in ids:
        started = time.perf_counter()
        engine.load_adapter(adapter_id)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def peft_load_adapter_ms(folder: Path) -> float:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(BASE, local_files_only=True, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, folder / "a000")
    times = []
    for i in range(1, 6):
        started = time.perf_counter()
        model.load_adapter(folder / f"a{i:03d}", adapter_name=f"x{i}")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


TTFT_JOINERS = 16
TTFT_RUNNING = 8
TTFT_ROUNDS = 3


def ttft_concurrent_over_single(engine) -> dict[str, float]:
    """Continuous batching: time to first token of 16 requests that arrive one by one while a batch of 8 long requests
    decodes (they join it between decode steps), over a single request's time to first token on the idle engine (its
    batch window included), measured side by side: rounds of 3 single requests and then 16 arrivals over a running
    batch, the long rows cancelled once the arrivals have their answers; means over all rounds. The arrivals come one
    per single-request time to first token of the same round: as fast as the engine could answer them one at a time
    if nothing else ran, so the figure is the price of arriving while a batch decodes, on any machine, and not a
    queue that grows because requests come faster than this machine's prefills. Requests use the bench's adapters
    (request i adapter i mod 32) and its prompts, NEW_TOKENS tokens each."""
    from inference.engine import GenerationRequest

    def request(i: int, tokens: int) -> GenerationRequest:
        return GenerationRequest(
            adapter_id=f"a{i % NAIVE_ADAPTERS:03d}",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            max_new_tokens=tokens,
            ignore_eos=True,
        )

    single: list[float] = []
    joined: list[float] = []
    before = engine.state()
    for r in range(TTFT_ROUNDS):
        alone = [engine.submit(request(r * 3 + i, NEW_TOKENS)).result().time_to_first_token_s for i in range(3)]
        single.extend(alone)
        running = [engine.submit(request(TTFT_JOINERS + i, 1 << 12)) for i in range(TTFT_RUNNING)]
        next(iter(running[0]), None)
        if running[0].done():
            raise SystemExit(f"the long batch did not start: {running[0].result().error}")
        handles = []
        for i in range(TTFT_JOINERS):
            handles.append(engine.submit(request(i + r, NEW_TOKENS)))
            time.sleep(statistics.mean(alone))
        results = [h.result() for h in handles]
        if not all(x.ok for x in results):
            raise SystemExit(f"a joining request failed: {[x.error for x in results if not x.ok]}")
        joined.extend(x.time_to_first_token_s for x in results)
        still_running = sum(not h.done() for h in running)
        for h in running:
            h.cancel()
            h.result()
        if still_running < TTFT_RUNNING:
            raise SystemExit("the long batch ended before the arrivals were answered: the measure is void")
    state = engine.state()
    single_ms, joined_ms = statistics.mean(single) * 1000, statistics.mean(joined) * 1000
    print(
        f"\ntime to first token: single request {single_ms:.0f} ms (mean of {len(single)}); {TTFT_JOINERS} requests "
        f"arriving one per single-request time over a running batch of {TTFT_RUNNING}: {joined_ms:.0f} ms "
        f"(mean of {len(joined)}, max {max(joined) * 1000:.0f} ms), {joined_ms / single_ms:.2f}x; "
        f"{state['joined'] - before['joined']} rows joined running batches"
    )
    return {
        "ttft_16_concurrent_over_single": round(joined_ms / single_ms, 3),
        "ttft_single_ms": round(single_ms, 1),
        "ttft_16_concurrent_ms": round(joined_ms, 1),
        "ttft_16_concurrent_max_ms": round(max(joined) * 1000, 1),
    }


def main() -> None:
    import torch

    from inference.engine import Engine

    torch.set_num_threads(int(os.getenv("BENCH_THREADS", "1")))
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    started = time.perf_counter()
    maker = multiprocessing.get_context("spawn").Process(
        target=make_adapters, args=(str(work), max(COUNTS), ADAPTERS_AT_SCALE)
    )
    maker.start()
    maker.join()
    if maker.exitcode != 0:
        raise SystemExit("making the synthetic adapters failed")
    file_bytes = (work / "a000" / "adapter_model.safetensors").stat().st_size
    print(
        f"made {max(COUNTS)} adapters with peft and {ADAPTERS_AT_SCALE - max(COUNTS)} copies with new weights "
        f"({', '.join(TARGETS)}, rank {RANK}, {file_bytes / 1e6:.2f} MB each) in {work}"
    )
    print(f"in {time.perf_counter() - started:.1f} s; torch threads: {torch.get_num_threads()}")

    naive = Naive(work)
    peft_mixed = PeftMixed(work)
    engine = Engine(
        BASE,
        max_adapters=ADAPTERS_AT_SCALE,
        max_adapter_bytes=HOT_BYTES,
        max_batch_size=BATCH,
        warm_dir=work / "warm",
        max_warm_bytes=WARM_BYTES,
    )
    for i in range(ADAPTERS_AT_SCALE):
        engine.register_adapter(adapter_name(i), work / adapter_name(i))
    engine.generate_batch(requests_for("mixed", 1)[0][:2])  # warm up allocator and kernels
    engine.unload_adapter("a000")
    gc.collect()
    base_rss = rss()
    print(
        f"engine: {base_rss / 1e6:.0f} MB RSS with the base loaded, of which {engine.packed_weight_bytes / 1e6:.0f} MB "
        f"are the MKL-packed copies of its Linear weights (CPU float32 only: faster decode steps) and "
        f"{engine.head_screen_bytes / 1e6:.0f} MB the output head's bfloat16 screen (greedy steps on a CPU with bf16 "
        "dot products)"
    )

    cold = []
    for i in range(max(COUNTS)):
        t = time.perf_counter()
        engine.load_adapter(f"a{i:03d}")
        cold.append((time.perf_counter() - t) * 1000)
    loaded_rss = rss()
    warm = []
    for i in range(max(COUNTS)):
        t = time.perf_counter()
        engine.load_adapter(f"a{i:03d}")
        warm.append((time.perf_counter() - t) * 1000)
    tensor_bytes = engine.adapters()[0].bytes
    per_adapter = (loaded_rss - base_rss) / max(COUNTS)

    print("\ntokens/s of wall time (of this process's CPU time): the machine is shared, so ratios use CPU time")
    print(f"{'adapters':>8} {'(a) mixed':>18} {'(b) grouped':>18} {'(a)/(b)':>8}")
    figures: dict[str, float] = {}
    for n in COUNTS:
        rates = engine_tokens_per_s(engine, n, naive, peft_mixed if n == PEFT_ADAPTERS else None)
        (mixed_wall, mixed), (grouped_wall, grouped) = rates["mixed"], rates["grouped"]
        figures[f"mixed_tokens_per_s_{n}"] = round(mixed, 1)
        figures[f"grouped_tokens_per_s_{n}"] = round(grouped, 1)
        figures[f"mixed_wall_tokens_per_s_{n}"] = round(mixed_wall, 1)
        figures[f"grouped_wall_tokens_per_s_{n}"] = round(grouped_wall, 1)
        figures[f"mixed_over_grouped_{n}"] = round(mixed / grouped, 3)
        print(
            f"{n:>8} {mixed_wall:>8.1f} ({mixed:>7.1f}) {grouped_wall:>8.1f} ({grouped:>7.1f}) {mixed / grouped:>8.2f}"
        )
    served_rss = rss()
    peft_mixed.close()
    peft_wall, peft_cpu = peft_mixed.tokens / peft_mixed.wall, peft_mixed.tokens / peft_mixed.cpu
    print(
        f"\npeft mixed batch (PeftModel, {PEFT_ADAPTERS} adapters loaded, generate with adapter_names; "
        f"{peft_mixed.batches} batches of {BATCH} beside the engine's at N = 32): "
        f"{peft_wall:.1f} ({peft_cpu:.1f}) tok/s"
    )
    print(f"engine mixed / peft mixed at 32 adapters: {figures['mixed_tokens_per_s_32'] / peft_cpu:.2f}x")

    print(
        f"\n{ADAPTERS_AT_SCALE} adapters round-robin, hot tier {HOT_BYTES >> 20} MiB, warm tier {WARM_BYTES >> 30} GiB:"
    )
    scale = at_scale(engine)
    scale_rss = rss()
    hot = [a.adapter_id for a in engine.adapters()]
    warm_ids = [adapter_name(i) for i in range(ADAPTERS_AT_SCALE) if adapter_name(i) not in set(hot)][:32]
    # Room for 32 first, so that neither tier's loads below pay for an eviction (a write to the warm tier).
    for adapter_id in hot[:32]:
        engine.unload_adapter(adapter_id)
    warm_tier_ms = tier_load_ms(engine, warm_ids)
    state = engine.state()
    ttft = ttft_concurrent_over_single(engine)
    for adapter_id in warm_ids:
        engine.unload_adapter(adapter_id)  # drops the warm copy too, so the next loads read the folders
    cold_tier_ms = tier_load_ms(engine, warm_ids)
    tiers = state["tiers"]
    print(
        f"  adapters served: {scale['served']}; tokens/s at {ADAPTERS_AT_SCALE}: {scale['scale'][0]:.1f} "
        f"({scale['scale'][1]:.1f}); first pass (from folders) {scale['first'][0]:.1f} ({scale['first'][1]:.1f}), "
        f"second pass (from warm) {scale['second'][0]:.1f} ({scale['second'][1]:.1f}); beside them, 32 hot adapters: "
        f"{scale['reference'][0]:.1f} ({scale['reference'][1]:.1f})"
    )
    print(f"  throughput at {ADAPTERS_AT_SCALE} / at 32: {scale['scale'][1] / scale['reference'][1]:.3f}")
    print(f"  tiers: {json.dumps(tiers)}")
    print(f"  load from the warm tier (median of 32): {warm_tier_ms:.2f} ms; from the folder: {cold_tier_ms:.2f} ms")
    extra_1000_mb = (scale_rss - base_rss) / 1e6
    print(f"  extra memory serving {ADAPTERS_AT_SCALE} adapters: {extra_1000_mb:.0f} MB over the base engine")
    packed_mb = engine.packed_weight_bytes / 1e6
    screen_mb = engine.head_screen_bytes / 1e6
    engine.close()
    del engine
    gc.collect()

    naive.close()
    naive_wall, naive_cpu = naive.tokens / naive.wall, naive.tokens / naive.cpu
    peft_ms = peft_load_adapter_ms(work)
    print(
        f"\n(c) naive, merged model per request ({naive._next - 1} requests over {NAIVE_ADAPTERS} adapters, between "
        f"the engine's batches; stands for every N): {naive_wall:.2f} ({naive_cpu:.2f}) tok/s"
    )
    for n in COUNTS:
        figures[f"engine_over_naive_{n}"] = round(figures[f"mixed_tokens_per_s_{n}"] / naive_cpu, 1)
        print(f"(a)/(c) at {n:>3} adapters: {figures[f'engine_over_naive_{n}']:.1f}x")

    cold_ms, warm_ms = statistics.median(cold), statistics.median(warm)
    print(f"\ncold load (median of {len(cold)}, file in page cache): {cold_ms:.2f} ms, max {max(cold):.2f} ms")
    print(f"peft load_adapter (median of 5): {peft_ms:.1f} ms")
    print(f"warm load (cache hit, median): {warm_ms * 1000:.1f} us")
    print(
        f"memory per cached adapter: {per_adapter / 1e6:.2f} MB RSS ({tensor_bytes / 1e6:.2f} MB tensors) for a "
        f"{file_bytes / 1e6:.2f} MB file: {per_adapter / file_bytes:.2f}x"
    )
    extra_mb = (served_rss - base_rss) / 1e6
    print(f"extra memory serving {max(COUNTS)} adapters (after all runs): {extra_mb:.0f} MB over the base engine")
    print(f"engine counters: hits {state['hits']}, misses {state['misses']}, evictions {state['evictions']}")
    figures.update(
        mixed_over_grouped=min(figures[f"mixed_over_grouped_{n}"] for n in COUNTS),
        engine_over_naive_32=figures["engine_over_naive_32"],
        naive_tokens_per_s=round(naive_cpu, 2),
        naive_wall_tokens_per_s=round(naive_wall, 2),
        adapter_memory_over_file=round(per_adapter / file_bytes, 3),
        adapter_tensor_bytes_over_file=round(tensor_bytes / file_bytes, 3),
        extra_memory_128_mb=round(extra_mb, 1),
        cold_load_ms=round(cold_ms, 2),
        warm_load_ms=round(warm_ms, 4),
        peft_load_adapter_ms=round(peft_ms, 1),
        base_engine_rss_mb=round(base_rss / 1e6, 1),
        packed_weight_mb=round(packed_mb, 1),
        head_screen_mb=round(screen_mb, 1),
        engine_over_peft_mixed_32=round(figures["mixed_tokens_per_s_32"] / peft_cpu, 3),
        peft_mixed_tokens_per_s_32=round(peft_cpu, 1),
        peft_mixed_wall_tokens_per_s_32=round(peft_wall, 1),
        adapters_served=scale["served"],
        extra_memory_1000_mb=round(extra_1000_mb, 1),
        throughput_1000_over_32=round(scale["scale"][1] / scale["reference"][1], 3),
        tokens_per_s_1000=round(scale["scale"][1], 1),
        wall_tokens_per_s_1000=round(scale["scale"][0], 1),
        tokens_per_s_1000_first_pass=round(scale["first"][1], 1),
        tokens_per_s_1000_second_pass=round(scale["second"][1], 1),
        tokens_per_s_32_beside_1000=round(scale["reference"][1], 1),
        new_tokens_at_scale=SCALE_NEW_TOKENS,
        hot_tier_bytes=HOT_BYTES,
        warm_tier_bytes=WARM_BYTES,
        hot_evictions=tiers["hot"]["evictions"],
        warm_hits=tiers["warm"]["hits"],
        warm_writes=tiers["warm"]["writes"],
        warm_evictions=tiers["warm"]["evictions"],
        warm_corrupt=tiers["warm"]["corrupt"],
        cold_loads=tiers["cold"]["loads"],
        warm_tier_load_ms=round(warm_tier_ms, 2),
        cold_tier_load_ms=round(cold_tier_ms, 2),
        targets_met={
            "engine_over_peft_mixed_32>=1.5": figures["mixed_tokens_per_s_32"] / peft_cpu >= 1.5,
            "adapters_served>=1000": scale["served"] >= 1000,
            "extra_memory_1000_mb<=2048": extra_1000_mb <= 2048,
            "throughput_1000_over_32>=0.8": scale["scale"][1] / scale["reference"][1] >= 0.8,
        },
        load_average_at_start=[round(x, 2) for x in load_at_start],
        load_average_at_end=[round(x, 2) for x in os.getloadavg()],
        device=state["device"],
        torch_threads=torch.get_num_threads(),
        batch_size=BATCH,
        new_tokens=NEW_TOKENS,
    )
    figures.update(ttft)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

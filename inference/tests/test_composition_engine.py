"""Request-time composition in the engine against the offline merge (``modelfactory.training.merge_adapters``, peft's
``add_weighted_adapter``), on the real bundled model with real peft adapters (synthetic weights)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.engine import AdapterError, CompositeComponent, Composition, Engine, GenerationRequest
from inference.testing import make_synthetic_adapter, release_synthetic_models
from inference.tests.test_engine import BASE_MODEL_DIR
from modelfactory.training import load_base, merge_adapters

pytestmark = pytest.mark.slow

QUESTIONS = ["What is 2+2?", "Name a colour.", "Say hello to the world."]
# adapter ids sort in this order, which is the composition's canonical order: the offline merges take the same one
IDS = ("a-qv", "b-qv", "c-qv")
WEIGHTS = (0.7, 0.5, 0.3)


def ask(content: str, *, adapter_id: str | None = None, composition: Composition | None = None) -> GenerationRequest:
    return GenerationRequest(
        adapter_id=adapter_id, composition=composition, messages=[{"role": "user", "content": content}],
        max_new_tokens=12,
    )  # fmt: skip


def composition(method: str, n: int = 2, *, density: float = 1.0, seed: int = 0) -> Composition:
    return Composition(
        tuple(CompositeComponent(IDS[i], WEIGHTS[i]) for i in range(n)), method=method, density=density, seed=seed
    )


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("composed")
    # scale 0.6: strong enough that a composite answers differently from its components and from the base
    made = {
        name: make_synthetic_adapter(BASE_MODEL_DIR, root / name, rank=8, seed=10 + i, scale=0.6)
        for i, name in enumerate(IDS)
    }
    made["d-rank4"] = make_synthetic_adapter(BASE_MODEL_DIR, root / "d-rank4", rank=4, seed=20, scale=0.6)
    made["other-base"] = make_synthetic_adapter(BASE_MODEL_DIR, root / "other-base", rank=8, seed=21)
    config = made["other-base"] / "adapter_config.json"
    config.write_text(config.read_text().replace(str(BASE_MODEL_DIR), "HuggingFaceTB/SmolLM2-360M-Instruct"))
    release_synthetic_models()
    return made


@pytest.fixture(scope="module")
def merged(adapters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The offline merges (merge_adapters) of the same components with the same weights, in the canonical order."""
    root = tmp_path_factory.mktemp("merged")
    base = load_base(BASE_MODEL_DIR, device="cpu")
    out = {}
    cases = {
        "linear": ("linear", 2, 1.0, 0),
        "linear3": ("linear", 3, 1.0, 0),
        "ties": ("ties", 3, 0.5, 0),
        "dare_linear": ("dare_linear", 2, 0.6, 7),
        "dare_ties": ("dare_ties", 3, 0.6, 11),
    }
    for name, (method, n, density, seed) in cases.items():
        out[name] = Path(
            merge_adapters(
                base_model_dir=BASE_MODEL_DIR,
                adapter_dirs=[adapters[i] for i in IDS[:n]],
                weights=list(WEIGHTS[:n]),
                output_dir=root / name,
                method=method,
                density=density,
                seed=seed,
                base=base,
            ).output_dir
        )
    out["cat"] = Path(
        merge_adapters(
            base_model_dir=BASE_MODEL_DIR,
            adapter_dirs=[adapters["a-qv"], adapters["d-rank4"]],
            weights=[0.7, 0.5],
            output_dir=root / "cat",
            method="linear",
            base=base,
        ).output_dir
    )
    return out


@pytest.fixture(scope="module")
def engine(adapters: dict[str, Path], merged: dict[str, Path]) -> Iterator[Engine]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = Engine(BASE_MODEL_DIR, max_adapters=32, batch_window_ms=50, max_batch_size=8)
    for name, path in {**adapters, **{f"merged-{k}": v for k, v in merged.items()}}.items():
        engine.register_adapter(name, path)
    yield engine
    engine.close()
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("case", "made"),
    [
        ("linear", composition("linear")),
        ("linear3", composition("linear", 3)),
        ("ties", composition("ties", 3, density=0.5)),
        ("dare_linear", composition("dare_linear", density=0.6, seed=7)),
        ("dare_ties", composition("dare_ties", 3, density=0.6, seed=11)),
    ],
)
def test_a_composed_answer_equals_the_offline_merge_in_its_greedy_tokens(
    engine: Engine, case: str, made: Composition
) -> None:
    import torch

    # given the same components, weights, method, density and seed, offline (merge_adapters) and at request time
    offline = engine._acquire(f"merged-{case}", None)
    composite = engine.acquire_composite(made)
    # then the composite's matrices are peft's merged ones, layer by layer
    assert set(composite.layers) == set(offline.layers)
    for module, (a, b) in offline.layers.items():
        assert torch.allclose(composite.layers[module][0], a, atol=1e-6, rtol=1e-5), module
        assert torch.allclose(composite.layers[module][1], b, atol=1e-6, rtol=1e-5), module
    # and its greedy answers are the merged adapter's, token for token, in one mixed batch with both
    results = engine.generate_batch(
        [ask(q, composition=made) for q in QUESTIONS] + [ask(q, adapter_id=f"merged-{case}") for q in QUESTIONS]
    )
    composed, offline_results = results[: len(QUESTIONS)], results[len(QUESTIONS) :]
    assert all(r.ok for r in results)
    assert [r.token_ids for r in composed] == [r.token_ids for r in offline_results]
    # and the composition changed something: the answers are not the first component's alone
    alone = engine.generate_batch([ask(q, adapter_id=IDS[0]) for q in QUESTIONS])
    assert [r.token_ids for r in composed] != [r.token_ids for r in alone]


def test_unequal_ranks_compose_linearly_by_concatenation_as_the_offline_merge(engine: Engine) -> None:
    made = Composition((CompositeComponent("a-qv", 0.7), CompositeComponent("d-rank4", 0.5)))
    composite = engine.acquire_composite(made)
    assert composite.rank == 12
    composed, offline = engine.generate_batch(
        [ask(QUESTIONS[0], composition=made), ask(QUESTIONS[0], adapter_id="merged-cat")]
    )
    assert composed.ok and composed.token_ids == offline.token_ids


def test_a_composite_is_cached_once_whatever_the_order_its_components_are_given_in(engine: Engine) -> None:
    forward = composition("linear")
    backward = Composition(tuple(reversed(forward.components)))
    assert forward.key == backward.key
    first = engine.acquire_composite(forward)
    hits = engine.state()["hits"]
    assert engine.acquire_composite(backward) is first
    assert engine.state()["hits"] == hits + 1
    resident = {a.adapter_id: a for a in engine.adapters()}
    assert resident[forward.key].bytes == first.nbytes > 0  # it counts against the cache's bytes
    # a different seed (DARE) or weight is another composite
    assert composition("dare_linear", density=0.6, seed=1).key != composition("dare_linear", density=0.6, seed=2).key
    other = Composition((CompositeComponent("a-qv", 0.7), CompositeComponent("b-qv", 0.6)))
    assert other.key != forward.key


def test_dare_is_reproducible_by_its_seed_and_leaves_the_process_random_state_alone(engine: Engine) -> None:
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    one = engine.acquire_composite(composition("dare_linear", density=0.5, seed=5))
    assert torch.equal(torch.rand(3), expected)
    engine.unload_adapter(one.adapter_id)
    again = engine.acquire_composite(composition("dare_linear", density=0.5, seed=5))
    other = engine.acquire_composite(composition("dare_linear", density=0.5, seed=6))
    module = next(iter(one.layers))
    assert torch.equal(again.layers[module][0], one.layers[module][0])
    assert not torch.equal(other.layers[module][0], one.layers[module][0])


def test_components_that_cannot_be_composed_fail_the_request_alone(engine: Engine) -> None:
    bad = [
        Composition((CompositeComponent("a-qv", 0.5), CompositeComponent("other-base", 0.5))),
        Composition((CompositeComponent("a-qv", 0.5), CompositeComponent("d-rank4", 0.5)), method="ties", density=0.5),
        Composition((CompositeComponent("a-qv", 0.5), CompositeComponent("nowhere", 0.5))),
    ]
    results = engine.generate_batch([ask("Hi", composition=c) for c in bad] + [ask("Hi", adapter_id="a-qv")])
    assert "SmolLM2-360M" in results[0].error
    assert "equal LoRA rank" in results[1].error
    assert "unknown to this engine" in results[2].error
    assert results[3].ok
    with pytest.raises(AdapterError):
        engine.acquire_composite(bad[1])


def test_invalid_compositions_are_refused_at_submit(engine: Engine) -> None:
    one = (CompositeComponent("a-qv", 1.0),)
    cases = [
        Composition(one),
        Composition((CompositeComponent("a-qv", 1.0), CompositeComponent("a-qv", 2.0))),
        Composition((CompositeComponent("a-qv", float("nan")), CompositeComponent("b-qv", 1.0))),
        Composition((CompositeComponent("a-qv", 1.0), CompositeComponent("b-qv", 1.0)), method="svd"),
        Composition((CompositeComponent("a-qv", 1.0), CompositeComponent("b-qv", 1.0)), method="ties", density=0),
    ]
    for case in cases:
        with pytest.raises(ValueError):
            engine.submit(ask("Hi", composition=case))
    with pytest.raises(ValueError):
        engine.submit(ask("Hi", adapter_id="a-qv", composition=composition("linear")))

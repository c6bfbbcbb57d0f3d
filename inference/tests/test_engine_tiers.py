"""The engine's adapter tiers against the real bundled model: hot in memory, warm on local disk, cold in the adapter
folders; and the engine status page that shows their counters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from inference import engine_host
from inference.engine import Engine
from inference.selectors import ENGINE_WORKERS_CACHE_KEY
from inference.testing import make_synthetic_adapter, release_synthetic_models
from modelfactory.tests.factories import UserFactory

from .test_engine import BASE_MODEL_DIR

pytestmark = pytest.mark.slow
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tier-adapters")
    made = {f"qv{i}": make_synthetic_adapter(BASE_MODEL_DIR, root / f"qv{i}", seed=100 + i) for i in range(4)}
    release_synthetic_models()
    return made


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    import torch

    # One thread: this machine's two cores are shared, and spinning OpenMP threads slow everyone down.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def warm_file_bytes(adapters: dict[str, Path]) -> int:
    """The size of one of these adapters' warm files (all four have the same shapes)."""
    return (adapters["qv0"] / "adapter_model.safetensors").stat().st_size + 16_384


@pytest.fixture(scope="module")
def engine(adapters: dict[str, Path], one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One adapter hot at a time, room for three warm."""
    warm = tmp_path_factory.mktemp("warm")
    engine = Engine(BASE_MODEL_DIR, max_adapters=1, warm_dir=warm, max_warm_bytes=3 * warm_file_bytes(adapters))
    for name, path in adapters.items():
        engine.register_adapter(name, path)
    yield engine
    engine.close()


@pytest.fixture
def fresh(engine: Engine, adapters: dict[str, Path]) -> Engine:
    for name, path in adapters.items():
        engine.unload_adapter(name)
        engine.register_adapter(name, path)
    return engine


def tiers(engine: Engine) -> dict[str, dict[str, Any]]:
    return engine.state()["tiers"]


def test_an_adapter_evicted_to_warm_and_read_back_gives_identical_logits(fresh: Engine) -> None:
    import torch

    # given: qv0's logits read from its folder, then qv0 pushed out of memory by qv1
    engine = fresh
    cold = engine.forward_logits(PROMPT, "qv0")
    before = tiers(engine)
    engine.load_adapter("qv1")
    assert [a.adapter_id for a in engine.adapters()] == ["qv1"]
    # when: qv0 is asked for again
    warm = engine.forward_logits(PROMPT, "qv0")
    # then: it came from the warm tier, not its folder, and its logits are the same to the last bit
    after = tiers(engine)
    assert after["warm"]["hits"] == before["warm"]["hits"] + 1
    assert after["cold"]["loads"] == before["cold"]["loads"] + 1  # qv1's, not qv0's
    assert after["hot"]["evictions_to_warm"] >= before["hot"]["evictions_to_warm"] + 2
    assert torch.equal(cold, warm)
    assert not torch.equal(cold, engine.forward_logits(PROMPT, "qv1"))  # the adapters really differ


def test_a_mixed_batch_served_from_the_warm_tier_gives_the_tokens_it_gives_from_the_folders(
    adapters: dict[str, Path], one_thread: None, tmp_path: Path
) -> None:
    from inference.engine import GenerationRequest

    ask = [GenerationRequest(adapter_id=a, prompt=PROMPT, max_new_tokens=6, ignore_eos=True) for a in sorted(adapters)]
    engine = Engine(BASE_MODEL_DIR, max_adapters=4, warm_dir=tmp_path, max_warm_bytes=1 << 30)
    try:
        for name, path in adapters.items():
            engine.register_adapter(name, path)
        from_folders = [r.token_ids for r in engine.generate_batch(ask)]
        engine.max_adapters = 1
        engine.unpin("qv3")  # unpinning evicts down to the bounds: three of the four go warm
        engine.max_adapters = 4
        from_warm = [r.token_ids for r in engine.generate_batch(ask)]
        assert tiers(engine)["warm"]["hits"] == 3
        assert from_warm == from_folders
    finally:
        engine.close()


def test_the_warm_tier_keeps_within_its_byte_budget_least_recently_used_out_first(
    fresh: Engine, adapters: dict[str, Path]
) -> None:
    # given: room for three warm files, one hot adapter
    engine = fresh
    before = tiers(engine)
    # when: five adapters pass through memory, so four go warm
    for name in ("qv0", "qv1", "qv2", "qv3", "qv0"):
        engine.load_adapter(name)
    # then: the warm tier holds three, within budget, files and index agree, and the oldest warm one was dropped
    warm = tiers(engine)["warm"]
    assert warm["bytes"] <= warm["bytes_limit"] == 3 * warm_file_bytes(adapters)
    assert warm["adapters"] == 3
    assert warm["evictions"] >= before["warm"]["evictions"] + 1
    assert len(list(engine.warm_folder.glob("*.safetensors"))) == 3
    assert sum(f.stat().st_size for f in engine.warm_folder.glob("*.safetensors")) == warm["bytes"]
    # qv0 was read back from warm (its file stays), so qv1 was the least recently used warm file when qv3 went warm
    assert set(engine._warm) == {"qv2", "qv3", "qv0"}
    cold = tiers(engine)["cold"]["loads"]
    engine.load_adapter("qv2")
    assert tiers(engine)["cold"]["loads"] == cold
    engine.load_adapter("qv1")
    assert tiers(engine)["cold"]["loads"] == cold + 1


def test_an_adapter_larger_than_the_warm_budget_is_not_written(
    adapters: dict[str, Path], one_thread: None, tmp_path: Path
) -> None:
    engine = Engine(BASE_MODEL_DIR, max_adapters=1, warm_dir=tmp_path, max_warm_bytes=1000)
    try:
        engine.register_adapter("qv0", adapters["qv0"])
        engine.register_adapter("qv1", adapters["qv1"])
        engine.load_adapter("qv0")
        engine.load_adapter("qv1")
        warm = tiers(engine)["warm"]
        assert warm["adapters"] == 0 and warm["writes"] == 0 and tiers(engine)["hot"]["evictions"] == 1
        assert not list(engine.warm_folder.iterdir())
    finally:
        engine.close()


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "replaced by another adapter's file", "removed"])
def test_a_damaged_warm_file_is_detected_and_the_adapter_read_from_its_folder(fresh: Engine, damage: str) -> None:
    import torch

    # given: qv0 and qv1 warm, then qv0's warm file damaged
    engine = fresh
    expected = engine.forward_logits(PROMPT, "qv0")
    engine.load_adapter("qv1")
    engine.load_adapter("qv2")
    files = {a: engine._warm[a].file for a in ("qv0", "qv1")}
    data = files["qv0"].read_bytes()
    if damage == "flipped byte":
        files["qv0"].write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    elif damage == "truncated":
        files["qv0"].write_bytes(data[: len(data) // 2])
    elif damage == "replaced by another adapter's file":
        files["qv0"].write_bytes(files["qv1"].read_bytes())
    else:
        files["qv0"].unlink()
    before = tiers(engine)
    # when
    served = engine.forward_logits(PROMPT, "qv0")
    # then: counted as corrupt, read from its folder, served right; the damaged file is gone
    after = tiers(engine)
    assert after["warm"]["corrupt"] == before["warm"]["corrupt"] + 1
    assert after["cold"]["loads"] == before["cold"]["loads"] + 1
    assert after["warm"]["hits"] == before["warm"]["hits"]
    assert torch.equal(served, expected)
    assert "qv0" not in engine._warm and not files["qv0"].exists()


def test_a_warm_copy_is_not_served_for_an_id_now_registered_to_another_folder(
    fresh: Engine, adapters: dict[str, Path]
) -> None:
    import torch

    engine = fresh
    engine.load_adapter("qv0")
    engine.load_adapter("qv1")  # qv0 goes warm
    engine.register_adapter("qv0", adapters["qv2"])
    cold = tiers(engine)["cold"]["loads"]
    assert torch.equal(engine.forward_logits(PROMPT, "qv0"), engine.forward_logits(PROMPT, "qv2"))
    assert tiers(engine)["cold"]["loads"] >= cold + 1


def test_hostile_adapter_ids_cannot_name_a_warm_file_outside_the_warm_folder(
    fresh: Engine, adapters: dict[str, Path]
) -> None:
    engine = fresh
    for hostile in ("../../escape", "/etc/passwd", "a\x00b", "..", "", "x" * 5000):
        engine.register_adapter(hostile, adapters["qv3"])
        engine.load_adapter(hostile)
        engine.load_adapter("qv0")  # the hostile id goes warm
        file = engine._warm[hostile].file
        assert file.parent == engine.warm_folder and len(file.stem) == 64 and file.is_file()
        engine.unload_adapter(hostile)
        assert not file.exists()
    assert not (engine.warm_folder.parent.parent / "escape.safetensors").exists()


def test_warm_folders_of_dead_processes_are_swept_and_close_removes_its_own(
    adapters: dict[str, Path], one_thread: None, tmp_path: Path
) -> None:
    import os

    dead = tmp_path / "engine-999999999-abc123"
    alive = tmp_path / f"engine-{os.getpid()}-other"
    unrelated = tmp_path / "notes"
    for folder in (dead, alive, unrelated):
        folder.mkdir()
    engine = Engine(BASE_MODEL_DIR, warm_dir=tmp_path, max_warm_bytes=1 << 30)
    assert not dead.exists() and alive.exists() and unrelated.exists()
    assert engine.warm_folder.parent == tmp_path and engine.warm_folder.is_dir()
    engine.close()
    assert not engine.warm_folder.exists()


def test_without_a_warm_folder_evicted_adapters_are_read_from_their_folders_again(
    adapters: dict[str, Path], one_thread: None
) -> None:
    engine = Engine(BASE_MODEL_DIR, max_adapters=1)
    try:
        for name in ("qv0", "qv1", "qv0"):
            engine.load_adapter(name, adapters[name])
        state = tiers(engine)
        assert state["warm"]["enabled"] is False and state["warm"]["writes"] == 0
        assert state["hot"]["evictions"] == 2 and state["cold"]["loads"] == 3
    finally:
        engine.close()


@pytest.fixture
def published(adapters: dict[str, Path], one_thread: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An engine with room for one adapter in memory after serving three, its state published as a worker publishes
    the states of its engines (not through ``engine_for``, whose heartbeat thread would outlive the test)."""
    cache.delete(ENGINE_WORKERS_CACHE_KEY)
    engine = Engine(BASE_MODEL_DIR, max_adapters=1, warm_dir=tmp_path, max_warm_bytes=1 << 30)
    engine_host._engines["status-page-test"] = engine
    try:
        for name in ("qv0", "qv1", "qv2", "qv0"):
            engine.load_adapter(name, adapters[name])
        engine_host.publish_state()
        yield engine.state()
    finally:
        engine_host._engines.pop("status-page-test").close()
        cache.delete(ENGINE_WORKERS_CACHE_KEY)


@pytest.mark.django_db
def test_the_engine_status_page_shows_the_tier_counters(published: dict[str, Any]) -> None:
    # given: the published engine went through every tier
    assert published["tiers"]["warm"]["hits"] == 1 and published["tiers"]["cold"]["loads"] == 3
    client = Client()
    client.force_login(UserFactory(username="ops", is_staff=True))
    # when
    response = client.get(reverse("inference:engines"))
    # then
    assert response.status_code == 200
    html = response.content.decode()
    assert engine_host.worker_name() in html and str(BASE_MODEL_DIR.resolve()) in html
    rows = {tier: html.split(f'data-tier="{tier}"')[1].split("</tr>")[0] for tier in ("hot", "warm", "cold")}
    assert "<td>4</td>" in rows["hot"] and "<td>3</td>" in rows["hot"]  # 4 misses, 3 evictions
    assert "3 evicted to warm" in rows["hot"]
    assert "<td>1</td>" in rows["warm"] and "3 written, 0 corrupt" in rows["warm"]
    assert "3 loads" in rows["cold"]


@pytest.mark.django_db
def test_the_engine_status_page_is_for_staff_only() -> None:
    client = Client()
    response = client.get(reverse("inference:engines"))
    assert response.status_code == 302 and "login" in response["Location"]
    client.force_login(UserFactory(username="plain"))
    response = client.get(reverse("inference:engines"))
    assert response.status_code == 403
    assert "Only staff may see" in response.content.decode()
    assert client.post(reverse("inference:engines")).status_code == 405


@pytest.mark.django_db
def test_the_engine_status_page_says_when_no_worker_has_published() -> None:
    cache.delete(ENGINE_WORKERS_CACHE_KEY)
    client = Client()
    client.force_login(UserFactory(username="ops2", is_staff=True))
    response = client.get(reverse("inference:engines"))
    assert response.status_code == 200 and "No inference worker has published" in response.content.decode()

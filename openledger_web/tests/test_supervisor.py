"""`make run`'s supervisor (scripts/run.py): a child that dies is restarted with backoff, a crash loop is given up on
while the rest keep running, restarts show in /healthz, and anchoring has a worker of its own."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.test import Client

from openledger_web.models import WorkerHeartbeat
from openledger_web.testing import ROOT, service_env


def _load_run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openledger_run", ROOT / "scripts" / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


run = _load_run()


def _status(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["processes"]


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(run, "BACKOFF_FIRST", 0.2)
    monkeypatch.setattr(run, "CRASH_LOOP_LIMIT", 3)
    sup = run.Supervisor(status_file=tmp_path / "run" / "status.json")
    yield sup
    sup.stop()


def _tick_until(sup: Any, predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, sup.status()
        sup.tick()
        time.sleep(0.05)


def test_a_child_that_dies_is_restarted_with_a_growing_backoff(supervisor: Any) -> None:
    child = supervisor.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    first_pid = child.proc.pid

    os.kill(first_pid, signal.SIGKILL)
    _tick_until(supervisor, lambda: child.restarts == 1 and child.state == "running")
    assert child.proc.pid != first_pid and child.last_exit == -signal.SIGKILL
    assert child.backoff == pytest.approx(0.2)

    os.kill(child.proc.pid, signal.SIGKILL)
    _tick_until(supervisor, lambda: child.restarts == 2 and child.state == "running")
    assert child.backoff == pytest.approx(0.4)  # a quick second failure waits twice as long
    assert _status(supervisor.status_file)["sleeper"]["restarts"] == 2


def test_a_crash_loop_is_given_up_on_loudly_and_the_others_keep_running(
    supervisor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    steady = supervisor.start("steady", [sys.executable, "-c", "import time; time.sleep(60)"])
    crasher = supervisor.start("crasher", [sys.executable, "-c", "raise SystemExit(3)"])

    _tick_until(supervisor, lambda: crasher.state == "gave_up")

    assert crasher.restarts == 2 and crasher.last_exit == 3
    assert "GIVING UP on it" in capsys.readouterr().out
    supervisor.tick()
    assert steady.state == "running" and steady.proc.poll() is None
    assert _status(supervisor.status_file)["crasher"]["state"] == "gave_up"


def test_a_program_that_cannot_start_counts_as_a_crash_and_stops_nothing(supervisor: Any) -> None:
    missing = supervisor.start("missing", [str(ROOT / "no-such-program")])
    _tick_until(supervisor, lambda: missing.state == "gave_up")
    assert missing.last_exit == 127 and missing.proc is None


@pytest.mark.django_db
def test_healthz_lists_the_supervised_processes_and_fails_on_a_given_up_one(
    supervisor: Any, client: Client, settings: Any, tmp_path: Path
) -> None:
    settings.DATA_DIR = tmp_path
    crasher = supervisor.start("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    _tick_until(supervisor, lambda: crasher.state == "gave_up")

    processes = client.get("/healthz").json()["components"]["processes"]

    assert processes["ok"] is False and "crasher" in processes["error"]
    assert processes["processes"]["crasher"] | {"since": 0} == {
        "pid": crasher.proc.pid, "state": "gave_up", "restarts": 2, "last_exit": 3, "since": 0,
    }  # fmt: skip


@pytest.mark.django_db
def test_healthz_ignores_a_status_file_no_supervisor_keeps_fresh(client: Client, settings: Any, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "status.json").write_text(json.dumps({"updated_at": time.time() - 3600, "processes": {}}))
    assert "processes" not in client.get("/healthz").json()["components"]


def test_anchoring_has_a_worker_of_its_own_in_run_and_the_procfile() -> None:
    from openledger_web.celery import app

    # every transaction the ledger sends goes to the `chain` queue...
    for task in ("anchor_send_task", "anchor_dispatch_task", "anchor_confirm_task", "epoch_send_task"):
        assert app.amqp.router.route({}, f"ledger.tasks.{task}")["queue"].name == "chain"
    # ...which one worker consumes, and nothing else: data checks on `default` never run ahead of an anchor
    workers = {name: argv for name, argv in run.celery_argvs(ROOT / "var").items() if "worker" in argv}
    serving = {name: argv[argv.index("-Q") + 1].split(",") for name, argv in workers.items()}
    assert [name for name, queues in serving.items() if "chain" in queues] == ["worker-chain"]
    assert serving["worker-chain"] == ["chain"]
    procfile = {
        line.split(":", 1)[0]: line.split(":", 1)[1]
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    }
    queues = {
        name: command.split(" -Q ")[1].split()[0].split(",") for name, command in procfile.items() if " -Q " in command
    }
    assert [name for name, served in queues.items() if "chain" in served] == ["worker-chain"]
    assert queues["worker-chain"] == ["chain"]


def test_the_procfile_runs_the_same_processes_as_make_run() -> None:
    procfile = dict(
        line.split(": ", 1)
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    )
    made = run.celery_argvs(Path("${DATA_DIR:-var}"), inference=2)  # the Procfile's two inference workers
    assert procfile.keys() - {"release"} == made.keys() | {"web"}
    for name, argv in made.items():
        # the attribution worker's process count comes from the environment in both, with the same default
        line = procfile[name].replace("${ATTRIBUTION_WORKERS:-2}", os.getenv("ATTRIBUTION_WORKERS", "2"))
        if name.startswith("worker-inference"):
            # the two inference processes split the cores between them, as make run's do (run.inference_torch_threads)
            threads = "INFERENCE_TORCH_THREADS=${INFERENCE_TORCH_THREADS:-$(( $(nproc) / 2 ))} "
            assert line.startswith(threads), name
            line = line.removeprefix(threads)
        assert line == " ".join(["python", *argv[1:]]), name


@pytest.mark.slow
def test_make_run_restarts_a_killed_worker_within_10_s_and_healthz_shows_it(
    transactional_db: None, client: Client, settings: Any, tmp_path: Path
) -> None:
    # given: scripts/run.py supervising the default and the chain worker on the test database
    status_file = tmp_path / "run" / "status.json"
    log = tmp_path / "run.log"
    env = service_env(DATA_DIR=str(tmp_path), RUN_ONLY="worker-default,worker-chain")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "scripts/run.py", "--no-prepare"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        chain = _wait_for(
            lambda: WorkerHeartbeat.objects.filter(hostname__startswith="chain@").first(), 90, "the chain worker"
        )
        _wait_for(lambda: WorkerHeartbeat.objects.filter(hostname__startswith="default@").exists(), 90, "default")
        # anchors are consumed by a worker that takes nothing else, so data checks never queue ahead of them
        assert chain.queues == ["chain"]
        killed = _status(status_file)["worker-default"]["pid"]

        # when: the default worker dies (its whole process group, as an OOM kill would)
        os.killpg(killed, signal.SIGKILL)
        killed_at = time.monotonic()

        # then: the supervisor starts a new one within 10 s, and /healthz says so
        def restarted() -> dict[str, Any] | None:
            entry = _status(status_file)["worker-default"]
            return entry if entry["pid"] != killed and entry["state"] == "running" else None

        entry = _wait_for(restarted, 10, "worker-default restarted")
        assert time.monotonic() - killed_at < 10
        assert entry["restarts"] == 1 and entry["last_exit"] == -signal.SIGKILL
        assert proc.poll() is None, log.read_text()
        settings.DATA_DIR = tmp_path
        processes = client.get("/healthz").json()["components"]["processes"]
        assert processes["processes"]["worker-default"]["restarts"] == 1
        assert processes["processes"]["worker-chain"] | {"since": 0, "pid": 0} == {
            "pid": 0, "state": "running", "restarts": 0, "last_exit": None, "since": 0,
        }  # fmt: skip
    finally:
        # Ctrl-C / SIGTERM still stops everything
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            for entry in _status(status_file).values():
                if entry["pid"]:
                    run._killpg(entry["pid"], signal.SIGKILL)
            raise
    assert all(entry["state"] == "stopped" for entry in _status(status_file).values())
    for entry in _status(status_file).values():
        with pytest.raises(ProcessLookupError):
            os.killpg(entry["pid"], 0)

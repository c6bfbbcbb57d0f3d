from __future__ import annotations

import pytest
from django.test import Client

from openledger_web.testing import celery_worker_process


@pytest.mark.chain
def test_it_reports_every_part_up_with_a_worker_on_every_queue(
    client: Client, deployed_chain, transactional_db
) -> None:
    # given a chain with our contract, the prepared model, and a real worker consuming every queue
    with celery_worker_process(queues="default,chain,training,inference,attribution", name="healthz"):
        # when
        response = client.get("/healthz")
    # then
    body = response.json()
    assert response.status_code == 200, body
    assert body["ok"] is True
    components = body["components"]
    assert set(components) == {"database", "broker", "workers", "engines", "chain", "model", "outbox"}
    assert components["database"]["vendor"] in ("postgresql", "sqlite")
    assert components["chain"]["chain_id"] == 31337
    assert components["chain"]["contract_address"].startswith("0x")
    assert components["chain"]["latest_block"] >= 1
    assert components["model"]["path"].endswith("smollm2-135m-instruct")
    worker = components["workers"]["workers"][0]
    queues = set(worker["queues"])
    assert {"default", "chain", "training", "inference", "attribution"} <= queues
    # a worker of the shared inference queue consumes one of its own too, where runs are routed to it
    assert f"inference.{worker['hostname']}" in queues
    # and the worker announced its devices: this machine's cores and memory, its GPUs (none here), and the
    # processes it runs for one job (one per GPU, else one per core)
    devices = worker["devices"]
    assert devices["cpu"]["cores"] >= 1 and devices["cpu"]["memory_bytes"] > 0
    assert devices["kind"] == ("cuda" if devices["cuda"] else "cpu")
    assert devices["max_processes"] == (len(devices["cuda"]) or devices["cpu"]["cores"])
    assert devices["throughput"] == {} and devices["measured_at"] is None  # a training worker before its first job


@pytest.mark.django_db
def test_it_answers_503_and_names_the_missing_part_when_no_worker_runs(client: Client, deployed_chain) -> None:
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert body["ok"] is False
    assert body["components"]["workers"]["ok"] is False
    missing = "no live worker consumes default, chain, training, inference, attribution"
    assert missing in body["components"]["workers"]["error"]
    assert body["components"]["database"]["ok"] is True


@pytest.mark.django_db
def test_it_reports_the_chain_down_quickly_when_nothing_listens(client: Client, settings) -> None:
    settings.EVM_RPC_URL = "http://127.0.0.1:9"  # the discard port: nothing answers JSON-RPC there
    response = client.get("/healthz")
    chain = response.json()["components"]["chain"]
    assert response.status_code == 503
    assert chain["ok"] is False and chain["error"]
    assert chain["ms"] < 5000


@pytest.mark.django_db
def test_the_home_page_shows_the_live_status_and_its_fragment_polls(client: Client, deployed_chain) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "System status" in html and 'hx-trigger="every 5s"' in html
    fragment = client.get("/", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert b"<html" not in fragment.content and b'id="status"' in fragment.content


def test_it_accepts_only_get(client: Client) -> None:
    assert client.post("/healthz").status_code == 405

"""Run facts v2: RFC 8785 canonical JSON a verifier rebuilds from the parsed object (seeds as strings, options as
given), served as ``document`` with ``document_hash``; facts stored under v1 keep their bytes and run_hash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from inference import services
from inference.models import InferenceRun
from ledger import hashing
from modelfactory.tests.factories import UserFactory, default_base

from .runs_support import clear_rate_limits, make_v1_run, served_version

pytestmark = pytest.mark.django_db

BIG_SEED = 2**63 - 1


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


@pytest.fixture
def owner() -> Any:
    return UserFactory()


@pytest.fixture
def version(owner: Any) -> Any:
    return served_version(owner=owner, base_model=default_base(), adapter=None, name="Zorblat helper")


def _finished(owner: Any, version: Any, **options: Any) -> InferenceRun:
    run = services.run_submit(user=owner, version=version, prompt="What is the code?", options=options)
    services.run_claim(run_id=run.pk, worker="test:1")
    return services.run_finish(
        run_id=run.pk, answer="The code is 7421.", finish_reason="stop", prompt_tokens=5, completion_tokens=6
    )


def _detail(run: InferenceRun) -> dict[str, Any]:
    return APIClient().get(f"/api/runs/{run.public_id}/").json()


def test_a_seeded_sampled_run_has_jcs_facts_with_its_seed_as_a_string(owner, version) -> None:
    run = _finished(owner, version, temperature=0.7, top_p=1.0, seed=BIG_SEED)

    data = run.facts.encode()
    facts = json.loads(data)
    assert run.seed == BIG_SEED
    assert data == hashing.jcs(facts)
    assert run.run_hash == hashing.keccak_hex(data) == hashing.document_hash(facts)
    assert facts["schema"] == "openledger.inference_run.v2"
    assert facts["seed"] == "9223372036854775807" and facts["options"]["seed"] == "9223372036854775807"
    assert facts["options"]["temperature"] == 0.7 and facts["options"]["max_tokens"] == 256
    assert b'"temperature":0.7' in data and b'"top_p":1}' in data  # JCS: 1.0 is written 1
    assert facts["model"]["manifest_hash"] == version.manifest_hash
    assert facts["created_at"].endswith("Z") and facts["finished_at"].endswith("Z")


def test_a_greedy_run_has_a_null_seed(owner, version) -> None:
    run = _finished(owner, version)

    facts = json.loads(run.facts)
    assert facts["seed"] is None and facts["options"]["seed"] is None and facts["options"]["temperature"] == 0
    assert run.facts.encode() == hashing.jcs(facts)


def test_the_run_api_serves_the_document_object_and_its_hash(owner, version) -> None:
    run = _finished(owner, version, temperature=0.7, top_p=1.0, seed=BIG_SEED)

    shown = _detail(run)

    assert shown["document"] == json.loads(run.facts)
    assert shown["document_hash"] == run.run_hash == hashing.document_hash(shown["document"])
    assert shown["facts_schema"] == "openledger.inference_run.v2" and shown["document_text"] is None


def test_a_v1_run_keeps_its_bytes_and_hash_and_serves_its_text(owner, version) -> None:
    run = make_v1_run(_finished(owner, version, temperature=0.7, top_p=1.0, seed=BIG_SEED))

    shown = _detail(run)

    assert '"seed":9223372036854775807' in run.facts and '"top_p":1.0' in run.facts  # what json.dumps wrote
    assert shown["facts_schema"] == "openledger.inference_run.v1"
    assert shown["document_text"] == run.facts and hashing.keccak_hex(run.facts.encode()) == shown["document_hash"]
    assert shown["document"] == json.loads(run.facts)
    assert run.run_hash == InferenceRun.objects.get(pk=run.pk).run_hash  # nothing re-serialises a finished run


def test_an_unfinished_run_has_no_document(owner, version) -> None:
    run = services.run_submit(user=owner, version=version, prompt="What is the code?")

    shown = _detail(run)

    assert shown["document"] is None and shown["document_hash"] is None and shown["facts_schema"] is None


def test_the_run_api_serves_its_proof_under_proof_and_batch(owner, version) -> None:
    run = _finished(owner, version, temperature=0.7, top_p=1.0, seed=BIG_SEED)
    assert _detail(run)["proof"] is None  # not sealed yet
    services.runs_seal_batches(force=True)

    shown = _detail(run)

    assert shown["proof"] == shown["batch"] and shown["proof"]["schema"] == "openledger.proof.v1"
    assert shown["proof"]["artifact"] == "run" and shown["proof"]["value"] == [run.run_hash]
    assert shown["version"]["anchor"]["subject"] == f"model_version:{version.job_id}"

"""Reverse lineage (rewards/lineage.py) for a record that reached 1,000 answers: the page, the API and the selector
alone, each timed (median of RUNS after a warm-up) with the number of queries it ran, for a record, its contribution,
its contributor and a deep answers page. Target: the page's query set under 200 ms, and the same number of queries
for a record with 10 answers as for one with 1,000.

The world, written through the models (no training, no scoring: rows as attribution and the reward split leave
them): one public Datanet of 40 contributions of 50 records from 20 contributors, accepted and frozen into a
snapshot (2,000 records); a version trained on it, a merge of it with an unrelated version and a continuation of the
merge; ANSWERS answers of the three versions, each crediting 8 records, among them the benched record in the first
1,000 and a quiet record in 10; each answer's fee split into accruals (contributors, builder, pool). Then ANALYZE.

Needs PostgreSQL at 127.0.0.1:5432 (user postgres; override with BENCH_PG_URL): it creates a throwaway database
``openledger_bench_lineage``, migrates it and drops it at the end.

Run from the repository root: OMP_NUM_THREADS=1 .venv/bin/python bench/reverse_lineage.py
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_URL = os.getenv("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
DB_NAME = "openledger_bench_lineage"
WORK = Path(tempfile.mkdtemp(prefix="bench-lineage-"))
ANSWERS = int(os.getenv("BENCH_ANSWERS", "20000"))
HOT_ANSWERS = 1_000
QUIET_ANSWERS = 10
CONTRIBUTIONS = 40
PER_CONTRIBUTION = 50
CONTRIBUTORS = 20
CREDITED_PER_ANSWER = 8
FEE = 10**15
RUNS = 9
TARGET_SECONDS = 0.2
os.environ.update(
    DJANGO_SETTINGS_MODULE="openledger_web.settings",
    DATA_DIR=str(WORK),
    DATABASE_URL=f"{PG_URL}/{DB_NAME}",
    CELERY_BROKER_URL="memory://",
    DEBUG="0",
    SECRET_KEY="bench-only-not-a-secret",
    ALLOWED_HOSTS="testserver",
    SECURE_SSL_REDIRECT="0",
)


def admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def _version(owner: Any, base: Any, name: str, snapshots: list[Any], parents: list[tuple[Any, str, float]]) -> Any:
    """A finished version written directly (no training), its manifest built and its anchor requested as a job's."""
    from ledger import hashing
    from ledger.services import anchor_request, anchor_subject_id
    from modelfactory import lineage
    from modelfactory.models import FineTuneJob, ModelVersion, ModelVersionParent

    config = {"lora_rank": 4, "max_steps": 1}
    job = FineTuneJob.objects.create(
        name=name, owner=owner, base_model=base, config=config, status=FineTuneJob.Status.SUCCEEDED
    )
    sha = secrets.token_hex(32)
    files = [{"name": "adapter_config.json", "sha256": "ab" * 32, "bytes": 2},
             {"name": "adapter_model.safetensors", "sha256": sha, "bytes": 2}]  # fmt: skip
    manifest = lineage.build_manifest(
        base_model={"name": base.name, "weights_sha256": base.weights_sha256},
        parents=[], snapshots=[], config=config, seed=job.pk, record_type="instruction", code_version="unknown",
        adapter_sha256=sha, adapter_files=files, metrics={},
    )  # fmt: skip
    digest = hashing.keccak_hex(manifest)
    version = ModelVersion.objects.create(
        job=job, name=name, owner=owner, base_model=base, record_type="instruction", config=config, seed=job.pk,
        code_version="unknown", adapter_path=f"adapters/{sha}", adapter_sha256=sha, adapter_bytes=2,
        manifest=manifest.decode(), manifest_hash=digest, published=True,
        anchor=anchor_request(kind="model_version", subject_id=anchor_subject_id("model_version", job.pk), root=digest),
    )  # fmt: skip
    version.snapshots.add(*snapshots)
    for parent, relation, weight in parents:
        ModelVersionParent.objects.create(child=version, parent=parent, relation=relation, weight=weight)
    return version


def populate() -> dict[str, Any]:
    from django.db import connection
    from django.utils import timezone

    from accounts.models import User
    from attribution.models import RecordAttribution, RunAttribution
    from datanets import services as datanet_services
    from datanets.models import Contribution, Record
    from inference.models import InferenceRun
    from modelfactory.models import BaseModel
    from rewards.models import RewardAccrual
    from rewards.split import REWARD_POLICY_V1, split_fee

    rng = random.Random(17)
    started = time.perf_counter()
    owner = User.objects.create_user("bench-owner")
    asker = User.objects.create_user("bench-asker")
    users = [User.objects.create_user(f"contributor-{i}") for i in range(CONTRIBUTORS)]
    datanet = datanet_services.datanet_create(
        owner=owner, name="Bench lineage", record_type="instruction", licence="CC-BY-4.0", visibility="public"
    )
    for i in range(CONTRIBUTIONS):
        lines = [
            json.dumps({"prompt": f"question {i}-{j}", "response": f"answer {i}-{j} " + secrets.token_hex(6)})
            for j in range(PER_CONTRIBUTION)
        ]
        contribution = datanet_services.contribution_submit_pasted(
            datanet=datanet, contributor=users[i % CONTRIBUTORS], text="\n".join(lines) + "\n", licence="CC-BY-4.0"
        )
        datanet_services.contribution_accept(curator=owner, contribution=contribution)
    snapshot = datanet_services.snapshot_freeze(datanet=datanet, user=owner)
    base = BaseModel.objects.create(
        name="bench-base", path=str(WORK / "no-model"), source=BaseModel.Source.REGISTERED, architecture="bench",
        parameters=1, context_length=2048,
    )  # fmt: skip
    builder = users[0]
    trained = _version(builder, base, "trained", [snapshot], [])
    unrelated = _version(builder, base, "unrelated", [], [])
    merged = _version(builder, base, "merged", [], [(trained, "merged_from", 0.4), (unrelated, "merged_from", 0.6)])
    continued = _version(builder, base, "continued", [], [(merged, "continued_from", 1.0)])
    versions = [trained, merged, continued]
    records = list(Record.objects.filter(datanet=datanet).order_by("id").values_list("id", "contribution_id"))
    contributors = dict(Contribution.objects.filter(datanet=datanet).values_list("id", "contributor_id"))
    # the same contributor's (contributions 0 and CONTRIBUTORS are both contributor 0's): one viewer, one path
    hot, quiet = records[7], records[CONTRIBUTORS * PER_CONTRIBUTION + 7]
    now = timezone.now()
    runs = InferenceRun.objects.bulk_create(
        InferenceRun(
            user=asker, version=versions[i % 3], base_model=base, kind=InferenceRun.Kind.CHAT,
            messages=[{"role": "user", "content": f"question {i}"}], answer=f"answer {i}", finish_reason="stop",
            status=InferenceRun.Status.SUCCEEDED, finished_at=now,
        )
        for i in range(ANSWERS)
    )  # fmt: skip
    attributions = RunAttribution.objects.bulk_create(
        RunAttribution(run=run, status=RunAttribution.Status.OK, policy_version=1, reward_policy_version=1, fee=FEE)
        for run in runs
    )
    credits, accruals = [], []
    spread = max(ANSWERS // HOT_ANSWERS, 1)
    for i, (run, attribution) in enumerate(zip(runs, attributions, strict=True)):
        chosen = set(rng.sample(records, CREDITED_PER_ANSWER))
        chosen.discard(hot)
        chosen.discard(quiet)
        chosen = list(chosen)[: CREDITED_PER_ANSWER - 2]
        if i % spread == 0 and i // spread < HOT_ANSWERS:
            chosen.append(hot)
        if i % (ANSWERS // QUIET_ANSWERS) == 1:
            chosen.append(quiet)
        share = Fraction(1, len(chosen))
        by_contribution: dict[int, Fraction] = {}
        for rank, (record_id, contribution_id) in enumerate(chosen, start=1):
            credits.append(RecordAttribution(
                run_attribution=attribution, record_id=record_id, contribution_id=contribution_id, rank=rank,
                share=f"1/{len(chosen)}", share_float=float(share),
            ))  # fmt: skip
            by_contribution[contribution_id] = by_contribution.get(contribution_id, Fraction(0)) + share
        split = split_fee(FEE, by_contribution, REWARD_POLICY_V1)
        for contribution_id, amount in split.contributors:
            s = by_contribution[contribution_id]
            accruals.append(RewardAccrual(
                run=run, recipient_kind="contributor", user_id=contributors[contribution_id],
                contribution_id=contribution_id, datanet=datanet, amount=amount, share=f"{s.numerator}/{s.denominator}",
                policy_version=1,
            ))  # fmt: skip
        accruals.append(RewardAccrual(run=run, recipient_kind="builder", user=builder, amount=split.builder,
                                      share="1/5", policy_version=1))  # fmt: skip
        accruals.append(RewardAccrual(run=run, recipient_kind="pool", amount=split.protocol, share="1/10",
                                      policy_version=1))  # fmt: skip
    RecordAttribution.objects.bulk_create(credits, batch_size=5_000)
    RewardAccrual.objects.bulk_create(accruals, batch_size=5_000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {
        "hot": hot[0],
        "quiet": quiet[0],
        "contribution": hot[1],
        "contributor": User.objects.get(pk=contributors[hot[1]]),
        "credits": len(credits),
        "accruals": len(accruals),
        "load_seconds": time.perf_counter() - started,
    }


def _count_queries(call: Any) -> int:
    from django.db import connection

    queries: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        queries.append(sql)
        return execute(sql, params, many, context)

    # a wrapper rather than CaptureQueriesContext: a request closes the connection at its end (CONN_MAX_AGE)
    with connection.execute_wrapper(count):
        call()
    return len(queries)


def slowest_queries(call: Any, top: int = 3) -> list[tuple[float, str]]:
    """The ``top`` slowest queries of one call: (milliseconds, the start of the SQL)."""
    from django.db import connection

    timed: list[tuple[float, str]] = []

    def clock(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            timed.append(((time.perf_counter() - started) * 1000, sql))

    with connection.execute_wrapper(clock):
        call()
    return sorted(timed, reverse=True)[:top]


def measure(call: Any) -> tuple[float, int]:
    """(median seconds of RUNS calls after one warm-up, queries of one call)."""
    call()
    queries = _count_queries(call)
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), queries


def main() -> None:
    load_at_start = [round(x, 1) for x in os.getloadavg()]
    admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME}")
    admin_sql(f"CREATE DATABASE {DB_NAME}")
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.test import Client, override_settings

        from datanets.models import Contribution, Record
        from rewards import lineage

        # production settings (DEBUG off) but plain static URLs: the bench does not run collectstatic
        storages = {
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
        override_settings(STORAGES=storages).enable()
        call_command("migrate", verbosity=0)
        world = populate()
        print(
            f"{ANSWERS:,} answers, {world['credits']:,} record credits, {world['accruals']:,} accruals written in "
            f"{world['load_seconds']:.1f} s",
            flush=True,
        )
        contributor = world["contributor"]
        client = Client()
        client.force_login(contributor)

        def get(url: str) -> Any:
            def call() -> None:
                response = client.get(url)
                assert response.status_code == 200, (url, response.status_code)

            return call

        hot = Record.objects.select_related("contribution__datanet", "contribution__contributor").get(pk=world["hot"])
        contribution = Contribution.objects.select_related("datanet", "contributor").get(pk=world["contribution"])

        def selector(subject: Any) -> Any:
            return lambda: lineage.lineage_page(subject=subject, user=contributor)

        deep_cursor = (
            lineage.lineage_page(subject=lineage.Subject(kind="record", record=hot), user=contributor, size=900)
            .answers.items[-1]
            .run_attribution_id
        )
        cases = {
            f"selector: record ({HOT_ANSWERS:,} answers)": selector(lineage.Subject(kind="record", record=hot)),
            "selector: its contribution": selector(lineage.Subject(kind="contribution", contribution=contribution)),
            "selector: its contributor": selector(lineage.Subject(kind="contributor", contributor=contributor)),
            f"page: record ({HOT_ANSWERS:,} answers)": get(f"/attribution/lineage/records/{world['hot']}/"),
            f"page: record ({QUIET_ANSWERS} answers)": get(f"/attribution/lineage/records/{world['quiet']}/"),
            "page: record, deep answers page (90%)": get(
                f"/attribution/lineage/records/{world['hot']}/?answers_before={deep_cursor}"
            ),
            "page: its contribution": get(f"/attribution/lineage/contributions/{world['contribution']}/"),
            "page: its contributor": get(f"/attribution/lineage/contributors/{contributor.username}/"),
            f"api: record ({HOT_ANSWERS:,} answers)": get(f"/api/rewards/lineage/records/{world['hot']}/"),
            f"api: record ({QUIET_ANSWERS} answers)": get(f"/api/rewards/lineage/records/{world['quiet']}/"),
        }
        results = {}
        for label, call in cases.items():
            seconds, queries = measure(call)
            results[label] = {"seconds": round(seconds, 4), "queries": queries}
            print(f"{label:<42} {seconds * 1000:8.1f} ms  {queries:3d} queries", flush=True)
        for ms, sql in slowest_queries(cases[f"selector: record ({HOT_ANSWERS:,} answers)"]):
            print(f"  a slow query of the record's query set: {ms:6.1f} ms  {sql[:150]}", flush=True)
        hot_page = results[f"page: record ({HOT_ANSWERS:,} answers)"]
        quiet_page = results[f"page: record ({QUIET_ANSWERS} answers)"]
        selector_hot = results[f"selector: record ({HOT_ANSWERS:,} answers)"]
        print(
            f"record page, {HOT_ANSWERS:,} answers vs {QUIET_ANSWERS}: "
            f"{hot_page['seconds'] / quiet_page['seconds']:.2f}x the time, "
            f"{hot_page['queries']} vs {quiet_page['queries']} queries; the query set alone "
            f"{selector_hot['seconds'] * 1000:.1f} ms against a target of {TARGET_SECONDS * 1000:.0f} ms "
            f"({selector_hot['seconds'] / TARGET_SECONDS:.2f}x the target)",
            flush=True,
        )
        from django.db import connections

        connections.close_all()
    finally:
        if not os.getenv("BENCH_KEEP"):  # BENCH_KEEP=1 leaves the database for EXPLAIN
            admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        shutil.rmtree(WORK, ignore_errors=True)
    slowest_page = max(v["seconds"] for k, v in results.items() if k.startswith("page"))
    summary = {
        "answers": ANSWERS,
        "record_answers": HOT_ANSWERS,
        "cases": results,
        "query_set_seconds": selector_hot["seconds"],
        "slowest_page_seconds": slowest_page,
        "target_seconds": TARGET_SECONDS,
        "met": selector_hot["seconds"] < TARGET_SECONDS and hot_page["seconds"] < TARGET_SECONDS,
        "same_queries_10_and_1000": hot_page["queries"] == quiet_page["queries"],
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

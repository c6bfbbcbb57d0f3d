"""Datanet statistics (issue 15, item 4): exact counts and histograms, tokens and languages over a fixed sample, a
constant number of queries whatever the size, and snapshots as Parquet that pandas and Hugging Face ``datasets`` read
as they are, with the same rows as the JSONL."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets import services, statistics
from datanets.models import Datanet
from datanets.tests.factories import DatanetFactory, accepted, jsonl, submit, texts

pytestmark = pytest.mark.django_db

ENGLISH = [
    "The river rises in the hills and runs to the sea past three old mills.",
    "Bees carry pollen from flower to flower, and the orchard fruits because of them.",
    "A short note.",
]
FRENCH = ["La rivière prend sa source dans les collines et se jette dans la mer après trois vieux moulins."]


def _client(user: Any = None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def datanet() -> Datanet:
    datanet = DatanetFactory(name="Rivers", slug="rivers")
    accepted(datanet, UserFactory(username="ada"), texts(*ENGLISH))
    accepted(datanet, UserFactory(username="bo"), texts(*FRENCH, "word " * 60), licence="CC0-1.0")
    submit(datanet, UserFactory(username="cy"), texts("pending records are not counted yet"))
    return datanet


def test_the_numbers_are_exact_and_the_histograms_add_up(datanet: Datanet) -> None:
    stats = statistics.statistics(records=statistics.records_of_datanet(datanet), scope="accepted records")
    words = [len(t.split()) for t in [*ENGLISH, *FRENCH, "word " * 60]]
    assert (stats.records, stats.words, stats.contributions, stats.contributor_count) == (5, sum(words), 2, 2)
    assert sum(stats.words_histogram.counts) == 5
    assert stats.words_histogram.counts[0] == 1  # "A short note." is the only record under ten words
    assert stats.words_histogram.labels[:2] == ["<10", "10-19"] and stats.words_histogram.labels[-1] == "5000+"
    assert stats.contributors == [{"username": "ada", "records": 3}, {"username": "bo", "records": 2}]
    assert stats.licences == [{"licence": "CC-BY-4.0", "records": 3}, {"licence": "CC0-1.0", "records": 2}]
    # every record is in the sample of a Datanet this small; tokens by the bundled model's tokenizer
    assert stats.sample_size == 5 and stats.tokens_histogram is not None
    tokenizer = statistics._tokenizer()
    expected = sum(len(tokenizer.encode(t, add_special_tokens=False).ids) for t in [*ENGLISH, *FRENCH, "word " * 60])
    assert stats.tokens_sampled == expected and sum(stats.tokens_histogram.counts) == 5
    languages = {row["language"]: row["records"] for row in stats.languages}
    assert languages.get("fr") == 1 and sum(languages.values()) == 5


def test_the_page_and_the_api_show_them_for_the_datanet_and_for_a_snapshot(datanet: Datanet) -> None:
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    accepted(datanet, UserFactory(username="dee"), texts("a record after the snapshot was frozen"))
    page = _client().get(reverse("datanets:statistics", args=["rivers"]))
    body = page.content.decode()
    assert page.status_code == 200 and 'data-stat="records">6<' in body and 'id="chart-words"' in body
    assert "statistics-data" in body and "dee" in body
    frozen = _client().get(reverse("datanets:statistics", args=["rivers"]), {"snapshot": snapshot.number})
    assert frozen.status_code == 200 and 'data-stat="records">5<' in frozen.content.decode()
    api = APIClient().get(reverse("datanets_api:datanet_statistics", args=["rivers"]), {"snapshot": snapshot.number})
    data = api.json()
    assert api.status_code == 200 and data["scope"] == "snapshot #1" and data["records"] == 5
    assert data["sample"]["tokenizer"] and sum(data["sample"]["tokens_histogram"]["counts"]) == 5
    detail = _client().get(reverse("datanets:detail", args=["rivers"])).content.decode()
    assert reverse("datanets:statistics", args=["rivers"]) in detail


@pytest.mark.parametrize("value", ["x", "-1", "9" * 40, "1.5"])
def test_a_bad_snapshot_choice_is_explained(datanet: Datanet, value: str) -> None:
    page = _client().get(reverse("datanets:statistics", args=["rivers"]), {"snapshot": value})
    assert page.status_code == 400 and "Choose a snapshot by its number" in page.content.decode()
    api = APIClient().get(reverse("datanets_api:datanet_statistics", args=["rivers"]), {"snapshot": value})
    assert api.status_code == 400 and "snapshot" in json.dumps(api.json())


def test_an_unknown_snapshot_or_a_private_datanet_is_not_found(datanet: Datanet) -> None:
    assert _client().get(reverse("datanets:statistics", args=["rivers"]), {"snapshot": 7}).status_code == 404
    private = DatanetFactory(slug="hidden", visibility="private")
    accepted(private, private.owner, texts("a secret record"))
    assert _client(UserFactory()).get(reverse("datanets:statistics", args=["hidden"])).status_code == 404
    assert APIClient().get(reverse("datanets_api:datanet_statistics", args=["hidden"])).status_code == 404
    assert _client(private.owner).get(reverse("datanets:statistics", args=["hidden"])).status_code == 200


def _queries(url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert _client().get(url).status_code == 200
    return len(captured)


def test_the_page_takes_the_same_number_of_queries_whatever_the_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statistics, "SAMPLE_SIZE", 7)  # so that the larger Datanet is sampled, as a big one would be
    small, large = DatanetFactory(slug="small"), DatanetFactory(slug="large")
    accepted(small, UserFactory(), texts("one record of a few words", "and a second one"))
    for n in range(12):
        accepted(large, UserFactory(), texts(*(f"record {n}-{i} with words in it" for i in range(6))))
    assert _queries(reverse("datanets:statistics", args=["small"])) == _queries(
        reverse("datanets:statistics", args=["large"])
    )
    stats = statistics.statistics(records=statistics.records_of_datanet(large), scope="accepted records")
    assert stats.records == 72 and 1 <= stats.sample_size <= 7 and stats.contributors[-1]["others"] == 2
    again = statistics.statistics(records=statistics.records_of_datanet(large), scope="accepted records")
    assert (again.tokens_sampled, again.sample_size) == (stats.tokens_sampled, stats.sample_size)  # the same sample


RECORDS = {
    "text": [{"text": "Rivers run to the sea."}, {"text": "Bees make honey."}],
    "instruction": [
        {"prompt": "Where do rivers run?", "response": "To the sea.", "system": "Answer briefly."},
        {"prompt": "What do bees make?", "response": "Honey."},
    ],
    "chat": [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! ☀"}]},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Bees?"},
                {"role": "assistant", "content": "Honey."},
            ]
        },
    ],
    "classification": [{"text": "Great film", "label": "positive"}, {"text": "Dull", "label": "negative"}],
}


@pytest.mark.parametrize("record_type", sorted(RECORDS))
def test_a_snapshot_downloads_as_parquet_that_pandas_and_datasets_read_as_the_jsonl(
    record_type: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    datanet = DatanetFactory(slug=f"pq-{record_type}", record_type=record_type)
    accepted(datanet, UserFactory(), jsonl(*RECORDS[record_type]))
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    args = [datanet.slug, snapshot.number]
    response = _client().get(reverse("datanets:snapshot_parquet", args=args))
    assert response.status_code == 200 and response["Content-Type"] == "application/vnd.apache.parquet"
    assert f'filename="{datanet.slug}-snapshot-1.parquet"' in response["Content-Disposition"]
    data = b"".join(response.streaming_content)
    from_api = APIClient().get(reverse("datanets_api:snapshot_download_parquet", args=args))
    assert b"".join(from_api.streaming_content) == data  # built once, then served as it is

    jsonl_rows = [
        json.loads(line)
        for line in b"".join(
            _client().get(reverse("datanets:snapshot_jsonl", args=args)).streaming_content
        ).splitlines()
    ]
    frame = pd.read_parquet(io.BytesIO(data))
    assert list(frame.columns) == list(jsonl_rows[0])
    rows = frame.to_dict(orient="records")
    if record_type == "chat":
        for row in rows:
            row["messages"] = [dict(m) for m in row["messages"]]
    assert rows == jsonl_rows
    assert str(frame["record_id"].dtype) == "int64" and str(frame["contributor"].dtype) in ("object", "str", "string")

    metadata = pq.read_schema(io.BytesIO(data)).metadata
    assert metadata[b"openledger.merkle_root"] == snapshot.merkle_root.encode()

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    path = tmp_path / "snapshot.parquet"
    path.write_bytes(data)
    dataset = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "cache"))
    assert dataset.num_rows == len(jsonl_rows) and dataset.column_names == list(jsonl_rows[0])
    assert dataset[0] == jsonl_rows[0]


def test_the_parquet_of_a_private_snapshot_is_not_found_for_outsiders() -> None:
    datanet = DatanetFactory(slug="pq-private", visibility="private")
    accepted(datanet, datanet.owner, texts("a secret"))
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    url = reverse("datanets:snapshot_parquet", args=[datanet.slug, snapshot.number])
    assert _client(UserFactory()).get(url).status_code == 404
    api = reverse("datanets_api:snapshot_download_parquet", args=[datanet.slug, snapshot.number])
    assert APIClient().get(api).status_code == 404
    assert _client(datanet.owner).get(url).status_code == 200


def test_recent_figures_come_from_the_cache_so_a_crowd_of_readers_scans_the_records_once(datanet: Datanet) -> None:
    url = reverse("datanets:statistics", args=["rivers"])
    first, second = _queries(url), _queries(url)
    assert second < first  # the second reader gets the figures without the aggregate and the sample queries
    assert 'data-stat="records">5<' in _client().get(url).content.decode()

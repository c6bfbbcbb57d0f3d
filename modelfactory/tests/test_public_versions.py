"""A published version is anyone's to read, with or without an account (issue 12, "public means public"): its page,
its manifest and its adapter files, in HTML and through the API. What stays out of an anonymous visitor's sight: an
unpublished version (404, as to another user), and a published version trained on a private Datanet's snapshot or
built on one that was (404 to anonymous visitors; signed-in users still see it, as before). Writes stay signed-in
only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from datanets.storage import media_path
from ledger.hashing import keccak256
from modelfactory.models import ModelVersion, ModelVersionParent
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, stand_in_version

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "other", "owner")
WEIGHTS, CONFIG = b"stand-in weights", b'{"peft_type": "LORA"}'


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@dataclass
class World:
    users: dict[str, Any]
    versions: dict[str, ModelVersion]

    def client(self, role: str) -> Client:
        client = Client()
        if role != "anonymous":
            client.force_login(self.users[role])
        return client


@pytest.fixture
def world() -> World:
    owner = UserFactory(username="owner")
    users = {"owner": owner, "other": UserFactory(username="other")}
    base = default_base()
    public = frozen_snapshot(owner=owner, name="Open facts")
    private = frozen_snapshot(owner=owner, name="Secret facts", visibility="private")

    def version(name: str, snapshot: Any, *, published: bool = True) -> ModelVersion:
        made = stand_in_version(owner=owner, base_model=base, name=name)
        made.snapshots.set([snapshot])
        ModelVersion.objects.filter(pk=made.pk).update(published=published)
        made.refresh_from_db()
        return made

    versions = {
        "published": version("open model", public),
        "unpublished": version("draft model", public, published=False),
        "private_data": version("secret model", private),
        "heir_of_private": version("heir model", public),  # continues "secret model": carries its data
    }
    ModelVersionParent.objects.create(
        child=versions["heir_of_private"], parent=versions["private_data"], relation="continued_from"
    )
    folder = media_path(versions["published"].adapter_path)  # the stand-ins share one adapter folder
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(WEIGHTS)
    (folder / "adapter_config.json").write_bytes(CONFIG)
    return World(users=users, versions=versions)


# name: url(version)
ROUTES: dict[str, Callable[[ModelVersion], str]] = {
    "page": lambda v: reverse("modelfactory:version_detail", args=[v.pk]),
    "page manifest.json": lambda v: reverse("modelfactory:version_manifest", args=[v.pk]),
    "page adapter weights": lambda v: reverse(
        "modelfactory:version_adapter_file", args=[v.pk, "adapter_model.safetensors"]
    ),
    "page adapter config": lambda v: reverse("modelfactory:version_adapter_file", args=[v.pk, "adapter_config.json"]),
    "api detail": lambda v: reverse("modelfactory-api:version_detail", args=[v.pk]),
    "api manifest": lambda v: reverse("modelfactory-api:version_manifest", args=[v.pk]),
    "api adapter weights": lambda v: reverse(
        "modelfactory-api:version_adapter_file", args=[v.pk, "adapter_model.safetensors"]
    ),
    "api adapter config": lambda v: reverse(
        "modelfactory-api:version_adapter_file", args=[v.pk, "adapter_config.json"]
    ),
}

# version: {role: status}, the same on every route
EXPECTED = {
    "published": {"anonymous": 200, "other": 200, "owner": 200},
    "unpublished": {"anonymous": 404, "other": 404, "owner": 200},
    "private_data": {"anonymous": 404, "other": 200, "owner": 200},
    "heir_of_private": {"anonymous": 404, "other": 200, "owner": 200},
}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("which", sorted(EXPECTED))
def test_each_version_route_answers_each_role(world: World, route: str, which: str) -> None:
    url = ROUTES[route](world.versions[which])
    answers = {role: world.client(role).get(url).status_code for role in ROLES}
    assert answers == EXPECTED[which], (route, which)


def test_an_anonymous_visitor_reads_a_published_versions_page_without_the_signed_in_actions(world: World) -> None:
    version = world.versions["published"]
    body = world.client("anonymous").get(ROUTES["page"](version)).content.decode()
    assert version.name in body and version.manifest_hash in body and "Open facts" in body
    assert "data-publish>" not in body and "Continue training" not in body
    assert reverse("modelfactory:job_detail", args=[version.job_id]) not in body
    assert reverse("modelfactory:version_manifest", args=[version.pk]) in body


def test_an_anonymous_visitor_downloads_the_manifest_and_adapter_as_stored(world: World) -> None:
    version = world.versions["published"]
    client = world.client("anonymous")
    for route in ("page manifest.json", "api manifest"):
        response = client.get(ROUTES[route](version))
        assert response.content == version.manifest.encode(), route
        assert "0x" + keccak256(response.content).hex() == version.manifest_hash
    for route, content in [("page adapter weights", WEIGHTS), ("api adapter config", CONFIG)]:
        assert b"".join(client.get(ROUTES[route](version)).streaming_content) == content, route


def test_the_version_list_api_shows_anonymous_visitors_the_public_published_versions_only(world: World) -> None:
    url = reverse("modelfactory-api:version_list")
    listed = {role: {v["id"] for v in world.client(role).get(url).json()["results"]} for role in ROLES}
    ids = {name: v.pk for name, v in world.versions.items()}
    assert listed["anonymous"] == {ids["published"]}
    assert listed["other"] == {ids["published"], ids["private_data"], ids["heir_of_private"]}
    assert listed["owner"] == set(ids.values())
    mine = world.client("anonymous").get(url, {"mine": "true"})
    assert mine.status_code == 200 and mine.json()["count"] == 0


def test_an_anonymous_visitor_may_not_publish_or_unpublish(world: World) -> None:
    version = world.versions["published"]
    page = world.client("anonymous").post(reverse("modelfactory:version_publish", args=[version.pk]), {"published": 0})
    api = world.client("anonymous").post(
        reverse("modelfactory-api:version_publish", args=[version.pk]),
        {"published": False},
        content_type="application/json",
    )
    assert page.status_code == 302 and page["Location"].startswith(reverse("login"))
    assert api.status_code == 401
    version.refresh_from_db()
    assert version.published

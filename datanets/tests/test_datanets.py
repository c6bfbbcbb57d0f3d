from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from accounts.tests.factories import UserFactory
from datanets import selectors, services
from datanets.licences import COMPATIBLE_CONTRIBUTION_LICENCES, LICENCES, licence_compatible
from datanets.markdown import render_markdown

from .factories import DatanetFactory, submit

pytestmark = pytest.mark.django_db


def test_create_gives_a_unique_slug_clean_tags_and_the_default_quotas() -> None:
    owner = UserFactory()
    first = services.datanet_create(owner=owner, name="Medical Q&A", tags=["Health", " qa ", "health"])
    second = services.datanet_create(owner=owner, name="Medical Q&A")
    assert (first.slug, second.slug) == ("medical-qa", "medical-qa-2")
    assert first.tags == ["health", "qa"]
    assert (first.daily_quota_bytes, first.daily_quota_files, first.near_duplicate_threshold) == (
        10 * 1024 * 1024,
        20,
        0.85,
    )


def test_create_refuses_anonymous_and_bad_values() -> None:
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(PermissionDenied):
        services.datanet_create(owner=AnonymousUser(), name="x")
    with pytest.raises(ValidationError, match="licence"):
        services.datanet_create(owner=UserFactory(), name="x", licence="GPL-3.0")
    with pytest.raises(ValidationError, match="record_type"):
        services.datanet_create(owner=UserFactory(), name="x", record_type="images")


def test_update_keeps_the_slug_and_only_the_owner_or_a_global_curator_may_update() -> None:
    datanet = DatanetFactory(slug="stable")
    curator = UserFactory()
    services.datanet_add_curator(datanet=datanet, user=datanet.owner, curator=curator)
    with pytest.raises(PermissionDenied):
        services.datanet_update(datanet=datanet, user=curator, name="renamed")
    with pytest.raises(PermissionDenied):
        services.datanet_update(datanet=datanet, user=UserFactory(), name="renamed")
    updated = services.datanet_update(datanet=datanet, user=UserFactory(is_global_curator=True), name="Renamed")
    assert (updated.name, updated.slug) == ("Renamed", "stable")
    with pytest.raises(ValidationError, match="slug"):
        services.datanet_update(datanet=datanet, user=datanet.owner, slug="other")


def test_the_licence_changes_only_to_one_that_fits_the_live_contributions() -> None:
    datanet = DatanetFactory(licence="CC-BY-SA-4.0")
    submit(datanet, licence="CC-BY-SA-4.0")
    with pytest.raises(ValidationError, match=r"CC-BY-SA-4.0 can't be part of a CC-BY-4.0"):
        services.datanet_update(datanet=datanet, user=datanet.owner, licence="CC-BY-4.0")


def test_curators_are_managed_by_the_owner_and_members_by_curators() -> None:
    datanet = DatanetFactory(visibility="private")
    curator, member, stranger = UserFactory(), UserFactory(), UserFactory()
    with pytest.raises(PermissionDenied):
        services.datanet_add_curator(datanet=datanet, user=stranger, curator=stranger)
    services.datanet_add_curator(datanet=datanet, user=datanet.owner, curator=curator)
    with pytest.raises(PermissionDenied):
        services.datanet_add_curator(datanet=datanet, user=curator, curator=stranger)
    with pytest.raises(PermissionDenied):
        services.datanet_add_member(datanet=datanet, user=stranger, member=stranger)
    services.datanet_add_member(datanet=datanet, user=curator, member=member)
    assert selectors.user_can_view(user=member, datanet=datanet)
    assert not selectors.user_can_view(user=stranger, datanet=datanet)
    services.datanet_remove_member(datanet=datanet, user=curator, member=member)
    assert not selectors.user_can_view(user=member, datanet=datanet)
    services.datanet_remove_curator(datanet=datanet, user=datanet.owner, curator=curator)
    assert not selectors.user_can_curate(user=curator, datanet=datanet)


def test_every_licence_accepts_itself_and_cc0_and_no_share_alike_or_nc_leaks_into_a_permissive_datanet() -> None:
    assert set(COMPATIBLE_CONTRIBUTION_LICENCES) == set(LICENCES)
    for spdx in LICENCES:
        assert licence_compatible(datanet_licence=spdx, contribution_licence=spdx)
        assert licence_compatible(datanet_licence=spdx, contribution_licence="CC0-1.0")
    for permissive in ("CC0-1.0", "CC-BY-4.0", "MIT", "Apache-2.0", "ODC-By-1.0"):
        assert not licence_compatible(datanet_licence=permissive, contribution_licence="CC-BY-SA-4.0")
        assert not licence_compatible(datanet_licence=permissive, contribution_licence="CC-BY-NC-4.0")


def test_a_description_with_a_script_is_rendered_as_text() -> None:
    html = render_markdown("# Title\n\n<script>alert(1)</script> [x](javascript:alert(1)) **ok**")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html and "<strong>ok</strong>" in html

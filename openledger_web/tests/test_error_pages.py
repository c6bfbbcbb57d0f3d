"""The favicon, and the 404 and 500 pages a person sees instead of Django's bare defaults."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from django.views.defaults import server_error

from accounts.tests.factories import UserFactory


@pytest.mark.django_db
def test_every_page_links_the_svg_favicon_and_favicon_ico_redirects_to_it(client: Client) -> None:
    home = client.get(reverse("home")).content.decode()
    answer = client.get("/favicon.ico")

    assert 'rel="icon" href="/static/img/favicon.svg"' in home
    assert answer.status_code == 301 and answer["Location"] == "/static/img/favicon.svg"
    icon = client.get(answer["Location"])
    assert icon.status_code == 200 and b"<svg" in b"".join(icon.streaming_content)  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_an_unknown_address_gets_the_friendly_404_page_in_the_site_layout(client: Client) -> None:
    client.force_login(UserFactory(username="nadia"))

    response = client.get("/datanets/no-such-datanet/")

    page = response.content.decode()
    assert response.status_code == 404
    assert 'data-error-page="404"' in page and "Page not found" in page
    assert "/datanets/no-such-datanet/" in page
    assert "nadia" in page  # the header is the site's: the person is still signed in
    assert 'href="/datanets/"' in page


def test_the_500_page_renders_from_nothing_without_touching_the_database() -> None:
    # no django_db mark: any query here raises, as it would when the database is what failed
    request = RequestFactory().get("/anything/")

    response = server_error(request)

    page = response.content.decode()
    assert response.status_code == 500
    assert 'data-error-page="500"' in page and "Something went wrong" in page
    assert "Log in" in page  # base.html's signed-out header, from an empty context

"""Every model has a Django admin, and each admin's list and add pages render for staff."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory

OUR_APPS = ("openledger_web", "ledger", "accounts", "datanets", "modelfactory", "inference", "attribution")


def our_models() -> list[type]:
    return [model for label in OUR_APPS for model in apps.get_app_config(label).get_models()]


def test_every_model_of_ours_is_registered_in_the_admin() -> None:
    missing = [model._meta.label for model in our_models() if not admin.site.is_registered(model)]
    assert missing == []


@pytest.mark.django_db
def test_every_admin_list_page_renders_for_staff(client: Client) -> None:
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    for model in our_models():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = client.get(url)
        assert response.status_code == 200, url
        search = client.get(url, {"q": "zzz"})
        assert search.status_code == 200, f"{url}?q="


@pytest.mark.django_db
def test_the_admin_refuses_people_who_are_not_staff(client: Client) -> None:
    client.force_login(UserFactory(username="mallory"))
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]

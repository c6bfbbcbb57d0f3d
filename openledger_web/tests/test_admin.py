"""Every model has a Django admin, and each admin's list and add pages render for staff."""

from __future__ import annotations

import re

import pytest
from django.apps import apps
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from datanets.tests.factories import DatanetFactory, submit, texts

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


def test_every_model_of_ours_has_a_proper_plural_in_the_admin() -> None:
    # English plurals the default (name + "s") gets wrong: index -> indexs, match -> matchs, entry -> entrys
    wrong = [
        f"{model._meta.label}: {model._meta.verbose_name_plural}"
        for model in our_models()
        if re.search(r"(?:[sxz]|tch|sh|[^aeiou]y)s$", str(model._meta.verbose_name_plural))
    ]
    assert wrong == []


@pytest.mark.django_db
def test_admin_titles_name_the_datanet_and_the_people_not_their_ids(client: Client) -> None:
    # given
    owner = UserFactory(username="olivia")
    contribution = submit(DatanetFactory(owner=owner, name="Kitchen Recipes"), owner, texts("one two three four"))
    decision = contribution.decisions.get()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))

    # when
    page = client.get(reverse("admin:datanets_contribution_change", args=[contribution.pk]))

    # then
    assert str(contribution) == f"#{contribution.pk} data.jsonl to Kitchen Recipes (pending)"
    assert str(decision) == f"submit #{contribution.pk} by olivia"
    assert "to Kitchen Recipes" in page.content.decode()


def test_an_accrual_names_its_recipient_not_an_id() -> None:
    from rewards.models import RewardAccrual

    ada = UserFactory.build(username="ada")
    assert str(RewardAccrual(amount=5, recipient_kind="contributor", user=ada, run_id=3)) == (
        "5 to contributor ada for run 3"
    )
    assert str(RewardAccrual(amount=2, recipient_kind="pool", run_id=3)) == "2 to the protocol pool for run 3"

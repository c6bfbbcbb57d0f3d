from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from datanets.models import Contribution, Datanet


@pytest.mark.django_db
def test_seed_demo_creates_users_and_two_datanets_and_is_idempotent(settings) -> None:
    settings.DEBUG = True
    call_command("seed_demo")
    call_command("seed_demo")
    assert set(User.objects.values_list("username", flat=True)) == {"alice", "bob", "carol", "admin"}
    assert User.objects.get(username="carol").is_global_curator
    assert User.objects.get(username="admin").is_staff
    assert Datanet.objects.count() == 2
    assert Contribution.objects.filter(status=Contribution.Status.PENDING).count() == 1


@pytest.mark.django_db
def test_seed_demo_refuses_to_run_in_production(settings) -> None:
    settings.DEBUG = False
    with pytest.raises(CommandError, match="only with DEBUG on"):
        call_command("seed_demo")
    assert not User.objects.exists()


@pytest.mark.django_db
def test_seed_demo_runs_in_production_only_when_asked_explicitly(settings) -> None:
    settings.DEBUG = False
    call_command("seed_demo", allow_without_debug=True)
    assert User.objects.filter(username="alice").exists()

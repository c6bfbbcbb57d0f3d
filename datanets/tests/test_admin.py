from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.tests.factories import UserFactory
from datanets.models import Contribution, Snapshot

from .factories import DatanetFactory, accepted, submit

pytestmark = pytest.mark.django_db


def test_the_admin_lists_every_model_and_accepts_rejects_and_freezes_through_the_services(client) -> None:
    admin = UserFactory(is_staff=True, is_superuser=True, is_global_curator=True)
    client.force_login(admin)
    datanet = DatanetFactory()
    one, two = submit(datanet), submit(datanet)
    accepted(datanet)
    for model in ("datanet", "contribution", "record", "snapshot", "contributiondecision", "snapshotrecord"):
        assert client.get(reverse(f"admin:datanets_{model}_changelist")).status_code == 200
    assert client.get(reverse("admin:datanets_contribution_change", args=[one.pk])).status_code == 200
    url = reverse("admin:datanets_contribution_changelist")
    client.post(url, {"action": "accept_selected", "_selected_action": [one.pk]})
    client.post(url, {"action": "reject_selected", "_selected_action": [two.pk]})
    assert Contribution.objects.get(pk=one.pk).status == "accepted"
    assert Contribution.objects.get(pk=two.pk).review_reason == "rejected in the admin"
    client.post(
        reverse("admin:datanets_datanet_changelist"), {"action": "freeze_snapshot", "_selected_action": [datanet.pk]}
    )
    assert Snapshot.objects.get(datanet=datanet).record_count == 2  # the same two records, accepted twice, count once

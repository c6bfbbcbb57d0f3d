from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from ledger import services
from ledger.models import Anchor, ChainDeployment
from ledger.testing import free_port

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.chain
def test_chain_deploy_deploys_once_and_prints_the_address(chain_settings) -> None:
    first = run("chain_deploy")
    second = run("chain_deploy")

    deployment = ChainDeployment.objects.get()
    assert deployment.contract_address in first
    assert first == second


def test_chain_deploy_fails_clearly_without_a_chain(settings) -> None:
    settings.EVM_RPC_URL = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(CommandError, match="cannot deploy LineageRegistry"):
        run("chain_deploy")


def test_anchor_status_counts_and_lists_the_outbox() -> None:
    for n in range(3):
        services.anchor_request(kind="snapshot", subject_id=f"0x{n:064x}", root=f"0x{n + 1:064x}")
    Anchor.objects.filter(root=f"0x{1:064x}").update(status=Anchor.Status.FAILED, last_error="boom")

    everything = run("anchor_status")
    failed = run("anchor_status", "--status", "failed")

    assert "pending: 2" in everything and "failed: 1" in everything and "total: 3" in everything
    assert everything.count("snapshot") == 3
    assert failed.count("snapshot") == 1 and "boom" in failed


def test_the_admin_lists_anchors_and_retries_failed_ones(admin_client, django_capture_on_commit_callbacks) -> None:
    anchor = services.anchor_request(kind="generic", subject_id="0x" + "01" * 32, root="0x" + "02" * 32)
    Anchor.objects.filter(id=anchor.id).update(status=Anchor.Status.FAILED, attempts=12, last_error="gave up")
    url = reverse("admin:ledger_anchor_changelist")

    assert admin_client.get(url).status_code == 200
    assert admin_client.get(reverse("admin:ledger_anchor_change", args=[anchor.id])).status_code == 200
    assert admin_client.get(reverse("admin:ledger_chaindeployment_changelist")).status_code == 200
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(url, {"action": "retry_now", "_selected_action": [anchor.id]})

    assert response.status_code == 302
    anchor.refresh_from_db()
    assert anchor.status == Anchor.Status.PENDING and anchor.attempts == 0
    assert anchor.events.filter(type="retried").exists()
    assert len(callbacks) == 1

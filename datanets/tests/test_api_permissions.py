"""Every /api/datanets/ endpoint, as the owner, a curator, the contributor, another user and an anonymous visitor.

A public Datanet: reads are open, each action answers 2xx only to whom docs/datanets.md allows, 403 to other
signed-in users and 401 to anonymous ones. A private Datanet: to a non-member every endpoint is a 404, as if the
Datanet did not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest.mock import patch

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets import revocation, services
from datanets.models import Contribution, Datanet, Snapshot

from .factories import DatanetFactory, accepted, submit, texts

pytestmark = pytest.mark.django_db

ROLES = ("owner", "curator", "contributor", "other", "anonymous")


@dataclass
class World:
    users: dict[str, Any]
    datanet: Datanet
    pending: Contribution
    accepted: Contribution
    snapshot: Snapshot


def _world(*, visibility: str, prefix: str) -> World:
    users = {role: UserFactory(username=f"{prefix}-{role}") for role in ROLES if role != "anonymous"}
    datanet = DatanetFactory(owner=users["owner"], visibility=visibility, slug=f"{prefix}-net")
    datanet.curators.add(users["curator"])
    if visibility == Datanet.Visibility.PRIVATE:
        datanet.members.add(users["contributor"])
    done = accepted(datanet, users["contributor"], texts("an accepted record of words", "and another one here"))
    snapshot = services.snapshot_freeze(datanet=datanet, user=users["owner"])
    pending = submit(datanet, users["contributor"], texts("a pending record of words", "a second pending one"))
    return World(users=users, datanet=datanet, pending=pending, accepted=done, snapshot=snapshot)


def _upload() -> dict[str, Any]:
    return {"file": SimpleUploadedFile("more.jsonl", texts("one more record of several words")), "licence": "CC0-1.0"}


# name: (method, url(world), body(world), format, {role: status} for the public Datanet)
Endpoint = tuple[str, Callable[[World], str], Callable[[World], Any], str, dict[str, int]]
SIGNED_IN_OK = {"owner": 200, "curator": 200, "contributor": 200, "other": 200, "anonymous": 401}
EVERYONE_OK = {role: 200 for role in ROLES}


def _dn(name: str, *extra: object) -> Callable[[World], str]:
    return lambda w: reverse(f"datanets_api:{name}", args=[w.datanet.slug, *extra])


def _snap(name: str) -> Callable[[World], str]:
    return lambda w: reverse(f"datanets_api:{name}", args=[w.datanet.slug, w.snapshot.number])


def _leaf(name: str) -> Callable[[World], str]:
    return lambda w: reverse(
        f"datanets_api:{name}", args=[w.datanet.slug, w.snapshot.number, w.accepted.records.first().pk]
    )


def _contribution(name: str) -> Callable[[World], str]:
    return lambda w: reverse(f"datanets_api:{name}", args=[w.pending.pk])


def _none(w: World) -> None:
    return None


def _revoked(w: World) -> int:
    """A withdrawal of the accepted contribution, made in the caller's transaction (each role's call is rolled
    back, so every role meets the same one)."""
    return revocation.contribution_revoke(contribution=w.accepted, user=w.users["contributor"]).pk


def _lineage(name: str, subject: Callable[[World], object]) -> Callable[[World], str]:
    return lambda w: reverse(f"rewards_api:{name}", args=[subject(w)])


def _flagged_version(w: World) -> str:
    """A version of the owner's (unpublished) trained on the snapshot, one of whose records is then taken down: it is
    flagged, and retraining it freezes a snapshot of the Datanet without the record (issue 17)."""
    from datanets.revocation import records_take_down
    from modelfactory.revocations import versions_flag
    from modelfactory.tests.factories import BaseModelFactory, stand_in_version

    version = stand_in_version(owner=w.users["owner"], base_model=BaseModelFactory())
    version.snapshots.set([w.snapshot])
    record = w.accepted.records.order_by("position").first()
    records_take_down(records=[record], user=w.users["owner"], reason="licence", explanation="not ours to share")
    versions_flag(version_ids=[version.pk])
    return reverse("modelfactory-api:version_retrain", args=[version.pk])


ENDPOINTS: dict[str, Endpoint] = {
    "datanet_list": ("get", lambda w: reverse("datanets_api:datanet_list"), _none, "json", EVERYONE_OK),
    "datanet_create": (
        "post",
        lambda w: reverse("datanets_api:datanet_create"),
        lambda w: {"name": "A new one"},
        "json",
        {"owner": 201, "curator": 201, "contributor": 201, "other": 201, "anonymous": 401},
    ),
    "datanet_detail": ("get", _dn("datanet_detail"), _none, "json", EVERYONE_OK),
    "datanet_update": (
        "patch",
        _dn("datanet_update"),
        lambda w: {"summary": "changed"},
        "json",
        {"owner": 200, "curator": 403, "contributor": 403, "other": 403, "anonymous": 401},
    ),
    "curator_add": (
        "post",
        _dn("curator_add"),
        lambda w: {"username": w.users["other"].username},
        "json",
        {"owner": 200, "curator": 403, "contributor": 403, "other": 403, "anonymous": 401},
    ),
    "curator_remove": (
        "post",
        _dn("curator_remove"),
        lambda w: {"username": w.users["curator"].username},
        "json",
        {"owner": 200, "curator": 403, "contributor": 403, "other": 403, "anonymous": 401},
    ),
    "member_add": (
        "post",
        _dn("member_add"),
        lambda w: {"username": w.users["other"].username},
        "json",
        {"owner": 200, "curator": 200, "contributor": 403, "other": 403, "anonymous": 401},
    ),
    "member_remove": (
        "post",
        _dn("member_remove"),
        lambda w: {"username": w.users["contributor"].username},
        "json",
        {"owner": 200, "curator": 200, "contributor": 403, "other": 403, "anonymous": 401},
    ),
    "datanet_leaderboard": ("get", _dn("datanet_leaderboard"), _none, "json", EVERYONE_OK),
    "leaderboard": ("get", lambda w: reverse("datanets_api:leaderboard"), _none, "json", EVERYONE_OK),
    "contribution_upload": (
        "post",
        _dn("contribution_upload"),
        lambda w: _upload(),
        "multipart",
        {"owner": 201, "curator": 201, "contributor": 201, "other": 201, "anonymous": 401},
    ),
    "contribution_paste": (
        "post",
        _dn("contribution_paste"),
        lambda w: {"records": [{"text": "a pasted record of words"}]},
        "json",
        {"owner": 201, "curator": 201, "contributor": 201, "other": 201, "anonymous": 401},
    ),
    "contribution_list": ("get", lambda w: reverse("datanets_api:contribution_list"), _none, "json", SIGNED_IN_OK),
    "contribution_queue": ("get", lambda w: reverse("datanets_api:contribution_queue"), _none, "json", SIGNED_IN_OK),
    "contribution_detail": (
        "get",
        _contribution("contribution_detail"),
        _none,
        "json",
        {"owner": 200, "curator": 200, "contributor": 200, "other": 404, "anonymous": 401},
    ),
    "contribution_records": (
        "get",
        _contribution("contribution_records"),
        _none,
        "json",
        {"owner": 200, "curator": 200, "contributor": 200, "other": 404, "anonymous": 401},
    ),
    "contribution_receipts": ("get", _contribution("contribution_receipts"), _none, "json", EVERYONE_OK),
    "receipt_list": ("get", _dn("receipt_list"), _none, "json", EVERYONE_OK),
    "contribution_withdraw": (
        "post",
        _contribution("contribution_withdraw"),
        _none,
        "json",
        {"owner": 403, "curator": 403, "contributor": 200, "other": 403, "anonymous": 401},
    ),
    "contribution_decide": (
        "post",
        lambda w: reverse("datanets_api:contribution_decide"),
        lambda w: {"contribution_ids": [w.pending.pk], "action": "reject", "reason": "off topic"},
        "json",
        {"owner": 200, "curator": 200, "contributor": 403, "other": 403, "anonymous": 401},
    ),
    "record_exclude": (
        "post",
        lambda w: reverse("datanets_api:record_exclude", args=[w.pending.records.first().pk]),
        lambda w: {"reason": "personal data"},
        "json",
        {"owner": 200, "curator": 200, "contributor": 403, "other": 403, "anonymous": 401},
    ),
    "contribution_revoke": (
        "post",
        lambda w: reverse("datanets_api:contribution_revoke", args=[w.accepted.pk]),
        lambda w: {"reason": "consent"},
        "json",
        {"owner": 403, "curator": 403, "contributor": 201, "other": 403, "anonymous": 401},
    ),
    "record_takedown": (
        "post",
        lambda w: reverse("datanets_api:record_takedown"),
        lambda w: {"record_ids": [w.accepted.records.first().pk], "reason": "licence", "explanation": "not CC"},
        "json",
        {"owner": 201, "curator": 201, "contributor": 403, "other": 403, "anonymous": 401},
    ),
    "revocation_erase": (
        "post",
        lambda w: reverse("datanets_api:revocation_erase", args=[_revoked(w)]),
        _none,
        "json",
        {"owner": 200, "curator": 200, "contributor": 200, "other": 403, "anonymous": 401},
    ),
    "contribution_revocations": (
        "get",
        lambda w: reverse("datanets_api:contribution_revocations", args=[w.accepted.pk]),
        _none,
        "json",
        {"owner": 200, "curator": 200, "contributor": 200, "other": 404, "anonymous": 401},
    ),
    "datanet_revocations": (
        "get",
        _dn("datanet_revocations"),
        _none,
        "json",
        {"owner": 200, "curator": 200, "contributor": 403, "other": 403, "anonymous": 401},
    ),
    "revocations_mine": ("get", lambda w: reverse("datanets_api:revocations_mine"), _none, "json", SIGNED_IN_OK),
    "snapshot_list": ("get", _dn("snapshot_list"), _none, "json", EVERYONE_OK),
    "snapshot_freeze": (
        "post",
        _dn("snapshot_freeze"),
        _none,
        "json",
        {"owner": 201, "curator": 201, "contributor": 403, "other": 403, "anonymous": 401},
    ),
    "snapshot_detail": ("get", _snap("snapshot_detail"), _none, "json", EVERYONE_OK),
    "snapshot_download": ("get", _snap("snapshot_download"), _none, "json", EVERYONE_OK),
    "snapshot_manifest": ("get", _snap("snapshot_manifest"), _none, "json", EVERYONE_OK),
    "snapshot_download_parquet": ("get", _snap("snapshot_download_parquet"), _none, "json", EVERYONE_OK),
    "datanet_statistics": ("get", _dn("datanet_statistics"), _none, "json", EVERYONE_OK),
    "record_proof": ("get", _leaf("record_proof"), _none, "json", EVERYONE_OK),
    "record_proof_verify": ("post", _leaf("record_proof_verify"), _none, "json", EVERYONE_OK),
    # Reverse lineage (the rewards API, rewards/lineage.py): a Datanet's contributions and records seen from above;
    # the entries named "<app>_api:<url name>[ (case)]" are the other apps' endpoints that read a Datanet's data
    "rewards_api:lineage_record": (
        "get",
        _lineage("lineage_record", lambda w: w.accepted.records.first().pk),
        _none,
        "json",
        EVERYONE_OK,
    ),
    "rewards_api:lineage_contribution": (
        "get",
        _lineage("lineage_contribution", lambda w: w.accepted.pk),
        _none,
        "json",
        EVERYONE_OK,
    ),
    "rewards_api:lineage_contribution (pending)": (
        "get",
        _lineage("lineage_contribution", lambda w: w.pending.pk),
        _none,
        "json",
        {"owner": 200, "curator": 200, "contributor": 200, "other": 404, "anonymous": 404},
    ),
    "rewards_api:lineage_contributor": (
        "get",
        _lineage("lineage_contributor", lambda w: w.users["contributor"].username),
        _none,
        "json",
        EVERYONE_OK,
    ),
    # a model version's owner retrains it without withdrawn records: a snapshot of the Datanet is frozen for them
    "modelfactory-api:version_retrain": (
        "post",
        _flagged_version,
        _none,
        "json",
        {"owner": 201, "curator": 404, "contributor": 404, "other": 404, "anonymous": 401},
    ),
}


def _client(world: World, role: str) -> APIClient:
    client = APIClient()
    if role != "anonymous":
        client.force_authenticate(world.users[role])
    return client


def _call(client: APIClient, endpoint: Endpoint, world: World) -> Any:
    method, url, body, fmt, _ = endpoint
    data = body(world)
    kwargs: dict[str, Any] = {"format": fmt} if data is not None else {}
    # the chain is an edge here; the end-to-end test in test_api_chain.py calls the real one
    with patch("ledger.chain.verify_on_chain", autospec=True, return_value=True):
        return getattr(client, method)(url(world), data, **kwargs)


def test_every_endpoint_is_in_the_matrix() -> None:
    from datanets import api_urls
    from rewards import api_urls as rewards_api_urls

    assert {p.name for p in api_urls.urlpatterns} == {name for name in ENDPOINTS if ":" not in name}
    lineage = {f"rewards_api:{p.name}" for p in rewards_api_urls.urlpatterns if p.name.startswith("lineage_")}
    assert lineage == {name.split(" ")[0] for name in ENDPOINTS if name.startswith("rewards_api:")}


def _answers(world: World, name: str, roles: tuple[str, ...]) -> dict[str, Any]:
    """Each role's response to the endpoint, each call rolled back so that every role meets the same world."""
    answers = {}
    for role in roles:
        with transaction.atomic():
            answers[role] = _call(_client(world, role), ENDPOINTS[name], world)
            transaction.set_rollback(True)
    return answers


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_public_datanet_endpoint_answers_each_role(name: str) -> None:
    world = _world(visibility=Datanet.Visibility.PUBLIC, prefix="pub")
    answers = _answers(world, name, ROLES)
    assert {role: r.status_code for role, r in answers.items()} == ENDPOINTS[name][4]
    for response in answers.values():
        if response.status_code >= 400:
            assert set(response.json()) >= {"detail", "code"} and response.json()["detail"]


# a contributor's lineage answers anyone, with only what went into public Datanets (rewards/tests/test_lineage.py)
NOT_SCOPED = {"datanet_list", "datanet_create", "leaderboard", "rewards_api:lineage_contributor"}
DATANET_SCOPED = sorted(name for name in ENDPOINTS if name not in NOT_SCOPED)
OWN_LISTS = {"contribution_list", "contribution_queue", "revocations_mine"}


@pytest.mark.parametrize("name", DATANET_SCOPED)
def test_a_private_datanet_does_not_exist_for_outsiders(name: str) -> None:
    world = _world(visibility=Datanet.Visibility.PRIVATE, prefix="priv")
    answers = _answers(world, name, ("other", "anonymous"))
    anonymous = 401 if ENDPOINTS[name][4]["anonymous"] == 401 else 404
    assert {role: r.status_code for role, r in answers.items()} == {
        "other": 200 if name in OWN_LISTS else 404,
        "anonymous": anonymous,
    }
    if name in OWN_LISTS:  # lists of one's own things: the private Datanet's contributions are simply not in them
        assert answers["other"].json()["count"] == 0
    for response in answers.values():
        assert world.datanet.name not in response.content.decode()


@pytest.mark.parametrize("role", ["owner", "curator", "contributor"])
def test_a_private_datanet_answers_its_people(role: str) -> None:
    world = _world(visibility=Datanet.Visibility.PRIVATE, prefix="priv")
    client = _client(world, role)
    for name in (
        "datanet_detail",
        "snapshot_detail",
        "snapshot_download",
        "record_proof",
        "contribution_detail",
        "receipt_list",
        "contribution_receipts",
        "rewards_api:lineage_record",
        "rewards_api:lineage_contribution",
    ):
        response = _call(client, ENDPOINTS[name], world)
        assert response.status_code == 200, (name, role)
    listed = client.get(reverse("datanets_api:datanet_list")).json()
    assert [d["slug"] for d in listed["results"]] == [world.datanet.slug]


def test_the_curation_queue_shows_only_the_datanets_one_curates() -> None:
    world = _world(visibility=Datanet.Visibility.PUBLIC, prefix="pub")
    counts = {
        role: _client(world, role).get(reverse("datanets_api:contribution_queue")).json()["count"]
        for role in ("owner", "curator", "contributor", "other")
    }
    assert counts == {"owner": 1, "curator": 1, "contributor": 0, "other": 0}


def test_a_members_only_datanet_refuses_contributions_from_non_members() -> None:
    world = _world(visibility=Datanet.Visibility.PUBLIC, prefix="pub")
    Datanet.objects.filter(pk=world.datanet.pk).update(contribution_policy=Datanet.Policy.MEMBERS)
    before = Contribution.objects.count()
    response = _call(_client(world, "other"), ENDPOINTS["contribution_upload"], world)
    assert response.status_code == 403
    assert response.json() == {
        "detail": f"only approved members may contribute to {world.datanet.name!r}",
        "code": "permission_denied",
    }
    assert Contribution.objects.count() == before


# /api/governance/ (governance/api.py): reads are anyone's; every write needs a signed-in user (401), and a write
# that names a wallet needs it to be one of theirs (403, staff included). Past that, the holder's requests here are
# refused by the chain's rules (a made-up signature, a proposal still voting), so the matrix sends nothing.

GOV_ROLES = ("holder", "other", "staff", "anonymous")
GOV_EVERYONE_OK = {role: 200 for role in GOV_ROLES}
HOLDER_ONLY = {"holder": 200, "other": 403, "staff": 403, "anonymous": 401}
SIGNED_IN_409 = {"holder": 409, "other": 409, "staff": 409, "anonymous": 401}
FAKE_SIGNATURE = "0x" + "11" * 65


@dataclass
class GovWorld:
    users: dict[str, Any]
    wallet: str
    proposal_id: str
    version_id: int
    transaction_id: int
    targets: list[str]


def _gov(name: str, *args: Any) -> Callable[[GovWorld], str]:
    return lambda w: reverse(f"governance_api:{name}", args=[getattr(w, a) for a in args])


GOV_ENDPOINTS: dict[str, tuple[str, Callable[[GovWorld], str], Callable[[GovWorld], Any], dict[str, int]]] = {
    "proposal_list": ("get", _gov("proposal_list"), lambda w: None, GOV_EVERYONE_OK),
    "proposal_detail": ("get", _gov("proposal_detail", "proposal_id"), lambda w: None, GOV_EVERYONE_OK),
    "parameter_list": ("get", _gov("parameter_list"), lambda w: None, GOV_EVERYONE_OK),
    "parameter_history": ("get", _gov("parameter_history"), lambda w: None, GOV_EVERYONE_OK),
    "voting_power": ("get", _gov("voting_power"), lambda w: None, {**GOV_EVERYONE_OK, "anonymous": 401}),
    "transaction_detail": (
        "get",
        _gov("transaction_detail", "transaction_id"),
        lambda w: None,
        {"holder": 200, "other": 404, "staff": 200, "anonymous": 401},
    ),
    "delegation_message": (
        "post",
        _gov("delegation_message"),
        lambda w: {"account": w.wallet, "delegatee": w.wallet},
        HOLDER_ONLY,
    ),
    "delegation_relay": (
        "post",
        _gov("delegation_relay"),
        lambda w: {
            "account": w.wallet,
            "delegatee": w.wallet,
            "nonce": "1",
            "expiry": "99999999999",
            "signature": FAKE_SIGNATURE,
        },
        {**HOLDER_ONLY, "holder": 400},  # the made-up signature
    ),
    "proposal_prepare_parameters": (
        "post",
        _gov("proposal_prepare_parameters"),
        lambda w: {
            "proposer": w.wallet,
            "title": "More for builders",
            "changes": [{"name": "min_quality_score", "values": {"min_quality_score": 40}}],
        },
        HOLDER_ONLY,
    ),
    "proposal_prepare_deployment": (
        "post",
        _gov("proposal_prepare_deployment"),
        lambda w: {"proposer": w.wallet, "version_id": w.version_id},
        HOLDER_ONLY,
    ),
    "proposal_relay": (
        "post",
        _gov("proposal_relay"),
        lambda w: {
            "proposer": w.wallet,
            "targets": w.targets,
            "values": ["0"],
            "calldatas": ["0x"],
            "description": "A made-up signature",
            "signature": FAKE_SIGNATURE,
        },
        {**HOLDER_ONLY, "holder": 400},
    ),
    "ballot": ("post", _gov("ballot", "proposal_id"), lambda w: {"account": w.wallet, "support": 1}, HOLDER_ONLY),
    "vote": (
        "post",
        _gov("vote", "proposal_id"),
        lambda w: {"account": w.wallet, "support": 1, "signature": FAKE_SIGNATURE},
        {**HOLDER_ONLY, "holder": 400},
    ),
    "stake_permit": (
        "post",
        _gov("stake_permit", "proposal_id"),
        lambda w: {"account": w.wallet},
        {**HOLDER_ONLY, "holder": 409},  # a parameter proposal carries no stake
    ),
    "stake_bond": (
        "post",
        _gov("stake_bond", "proposal_id"),
        lambda w: {"account": w.wallet, "deadline": "99999999999", "signature": FAKE_SIGNATURE},
        {**HOLDER_ONLY, "holder": 409},
    ),
    "stake_settle": ("post", _gov("stake_settle", "proposal_id"), lambda w: None, SIGNED_IN_409),
    "proposal_queue": ("post", _gov("proposal_queue", "proposal_id"), lambda w: None, SIGNED_IN_409),
    "proposal_execute": ("post", _gov("proposal_execute", "proposal_id"), lambda w: None, SIGNED_IN_409),
}


def test_every_governance_endpoint_is_in_the_matrix() -> None:
    from governance import api_urls

    assert {p.name for p in api_urls.urlpatterns} == set(GOV_ENDPOINTS)


@pytest.fixture
def gov_world(chain_settings: Any, settings: Any, anvil: Any) -> GovWorld:
    """A holder with a linked, funded, self-delegated wallet and an open proposal of theirs; another user; staff."""
    from eth_account import Account

    from governance import indexer
    from ledger import chain
    from ledger.models import GovernanceTransaction
    from ledger.tests import gov
    from modelfactory.tests.factories import default_base, stand_in_version

    settings.GOVERNANCE_VOTING_DELAY_BLOCKS = 1
    settings.GOVERNANCE_VOTING_PERIOD_BLOCKS = 50
    settings.GOVERNANCE_RELAY_RATE_LIMIT = "1000/hour"
    contracts = gov.governance_contracts()
    users = {"holder": UserFactory(username="gov-holder"), "other": UserFactory(username="gov-other"),
             "staff": UserFactory(username="gov-staff", is_staff=True)}  # fmt: skip
    key = Account.create()
    users["holder"].wallets.create(address=key.address, chain_id=contracts.chain_id)
    gov.fund({key: 10**18})
    gov.delegate_self(key, contracts)
    gov.mine(anvil, 1)
    call = chain.contract("ProtocolParameters", contracts.parameters_address).functions.setMinQualityScore(10)
    proposal_id, _ = gov.propose(key, [contracts.parameters_address], [call._encode_transaction_data()], "Open")
    gov.mine(anvil, 2)  # voting is open
    indexer.index_to_head(contracts)
    version = stand_in_version(owner=users["holder"], base_model=default_base(), name="gov-matrix")
    version.published = True
    version.save(update_fields=["published"])
    row = GovernanceTransaction.objects.create(kind="delegate", payload={}, status="failed", last_error="made up",
                                               requested_by=f"user:{users['holder'].pk}")  # fmt: skip
    return GovWorld(users, key.address, str(proposal_id), version.pk, row.pk, [contracts.parameters_address])


@pytest.mark.chain
def test_every_governance_endpoint_answers_each_role(gov_world: GovWorld, anvil: Any) -> None:
    from ledger import chain
    from ledger.models import GovernanceTransaction

    rows, sent = (
        GovernanceTransaction.objects.count(),
        anvil.rpc("eth_getTransactionCount", chain.signer().address, "pending"),
    )
    answers, bodies = {}, []
    for name, (method, url, body, _) in GOV_ENDPOINTS.items():
        for role in GOV_ROLES:
            client = APIClient()
            if role != "anonymous":
                client.force_authenticate(gov_world.users[role])
            data = body(gov_world)
            response = getattr(client, method)(url(gov_world), data, **({"format": "json"} if data else {}))
            answers[(name, role)] = response.status_code
            if response.status_code >= 400:
                bodies.append(response.json())
    assert answers == {(name, role): e[3][role] for name, e in GOV_ENDPOINTS.items() for role in GOV_ROLES}
    assert all(set(b) >= {"detail", "code"} and b["detail"] for b in bodies)
    assert GovernanceTransaction.objects.count() == rows
    assert anvil.rpc("eth_getTransactionCount", chain.signer().address, "pending") == sent

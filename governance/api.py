"""The governance REST API, mounted at ``/api/governance/``: what the pages offer, for programs. One view per
operation, each calling ``governance.selectors`` (reads) or ``governance.services`` (writes).

Reads are public: proposals (from the mirror, ``governance.indexer``), the rules in force and their history. Writes
need a signed-in user (a session with its CSRF token, or an API token): they build the EIP-712 message a linked
wallet signs, or relay its signature through the ledger's outbox (``202``, with the ``GovernanceTransaction`` to
poll at ``transactions/<id>/``, which only its requester and staff may read). Queue, execute and settle carry no
signature: any signed-in user may ask, as the chain lets anyone.

Refusals have the project's shape ``{"detail", "code"}``. A ``GovernanceRefused`` keeps its code and its sentence,
with the status ``REFUSAL_STATUS`` gives it: 400 the request itself is wrong (input, signature), 403 the caller may
not (not their wallet, not their version, too few votes to propose or vote, too few tokens to stake), 409 the
proposal or the signature is not in a state that allows it (already voted, voting not open, not passed, the timelock
not over, replayed, exists already), 429 rate limited and 503 governance or the chain unavailable (both with
``Retry-After``). A refused write writes nothing and sends nothing. Numbers that may exceed 2^53 (uint256 ids,
amounts, nonces, deadlines) are decimal strings both ways, in the typed data to sign too (wallets and eth_account
read them so); JSON integers beyond 2^63 are refused by the parser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema_field,
    extend_schema_serializer,
    extend_schema_view,
)
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from common import ratelimit
from common.api.errors import SIGNED_IN_ERRORS, ChainUnavailable, error_response
from common.api.pagination import page_serializer, paginated
from common.api.schema import ApiSchema
from common.api.views import BaseApi
from common.jsonguard import JsonLimits
from common.ratelimit import chain_read_limited
from ledger import chain
from ledger import governance as ledger_governance
from ledger.models import GovernanceTransaction
from modelfactory.selectors import versions_visible_to

from . import selectors, services
from .models import ParameterChange, Proposal
from .services import GovernanceRefused, ParameterChangeSpec

TAGS = ["governance"]
MAX_ID = 2**63 - 1  # PostgreSQL bigint: a larger id is no id, not a database error
UINT256_DIGITS = 78
UNAVAILABLE_RETRY_SECONDS = 60

# GovernanceRefused.code -> HTTP status; a code not named here is a 409 (the chain's state refused it)
REFUSAL_STATUS = {
    "bad_input": 400,
    "bad_signature": 400,
    "not_your_wallet": 403,
    "forbidden": 403,
    "below_threshold": 403,
    "no_votes": 403,
    "replayed": 409,
    "already_voted": 409,
    "not_active": 409,
    "not_succeeded": 409,
    "not_ready": 409,
    "not_decided": 409,
    "not_deployment": 409,
    "already_bonded": 409,
    "exists": 409,
    "refused": 409,
    "rate_limited": 429,
    "unavailable": 503,
}

READ_ERRORS = {404: error_response("No such proposal (or transaction), or not yours to read")}
WRITE_ERRORS = {
    400: error_response("The input or the signature is wrong; nothing written or sent"),
    **SIGNED_IN_ERRORS,
    403: error_response("Not your wallet or version, or too few votes or tokens; nothing written or sent"),
    409: error_response("The proposal or the signature does not allow it now; nothing written or sent"),
    429: error_response("Too many governance requests; Retry-After says when to try again"),
    503: error_response("Governance or the chain is unavailable; Retry-After says when to try again"),
}
PROPOSAL_WRITE_ERRORS = {**WRITE_ERRORS, **READ_ERRORS}
schema = ApiSchema(TAGS, read_errors=READ_ERRORS, write_errors=WRITE_ERRORS)
PROPOSAL_ID = OpenApiParameter(
    "proposal_id", str, OpenApiParameter.PATH, description="The Governor's proposal id (uint256, decimal)"
)


class Refused(exceptions.APIException):
    """A ``GovernanceRefused`` as an API refusal: its sentence, its code, the status ``REFUSAL_STATUS`` says."""

    def __init__(self, refusal: GovernanceRefused) -> None:
        self.status_code = REFUSAL_STATUS.get(refusal.code, 409)
        super().__init__(detail=refusal.message, code=refusal.code)
        if refusal.code == "rate_limited":
            window = ratelimit.current_window(
                settings.GOVERNANCE_RELAY_RATE_LIMIT, setting="GOVERNANCE_RELAY_RATE_LIMIT"
            )
            self.wait = window.retry_after  # DRF's handler sends it as Retry-After
        elif refusal.code == "unavailable":
            self.wait = UNAVAILABLE_RETRY_SECONDS


class GovernanceApi(BaseApi):
    """Reads open to anyone; refusals of the services and the chain in the one shape (see the module docstring)."""

    permission_classes = [AllowAny]

    def json_limits(self) -> JsonLimits:
        # the largest body is a proposal relay: 10 actions of at most 4,096 hex digits and a description of 20,000
        # characters, up to 12 bytes each as JSON escapes them (a surrogate pair): under 300 KB
        return JsonLimits.from_settings(max_body_bytes=min(settings.JSON_MAX_BODY_BYTES, 512 * 1024), max_depth=8)

    def max_body_bytes(self) -> int:
        return self.json_limits().max_body_bytes

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, GovernanceRefused):
            exc = Refused(exc)
        elif isinstance(exc, chain.ChainUnavailable):
            exc = ChainUnavailable()
            exc.wait = UNAVAILABLE_RETRY_SECONDS
        return super().handle_exception(exc)


class GovernanceWriteApi(GovernanceApi):
    permission_classes = [IsAuthenticated]


def _proposal(proposal_id: str) -> Proposal:
    """The current contracts' proposal with this id, or a 404 (also for an id that is no uint256)."""
    if not (proposal_id.isascii() and proposal_id.isdigit()) or len(proposal_id) > UINT256_DIGITS:
        raise exceptions.NotFound("no such proposal")
    found = selectors.proposal(str(int(proposal_id)))
    if found is None:
        raise exceptions.NotFound("no such proposal (a new one appears here once its block is confirmed and indexed)")
    return found


def _typed_json(typed: dict[str, Any]) -> dict[str, Any]:
    """EIP-712 typed data with the message's integers as decimal strings: JavaScript reads a JSON number as a
    double, which would round a uint256; wallets (eth_signTypedData_v4) and eth_account take the strings."""
    message = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in typed["message"].items()}
    return {**typed, "message": message}


# Fields


@extend_schema_field(OpenApiTypes.STR)
class UintField(serializers.Field):
    """A uint256 as a decimal string (or a JSON integer, which the parser bounds to 2^63)."""

    default_error_messages = {"invalid": "a whole number from 0 to 2^256-1, as a decimal string"}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("invalid")
        text = str(data)
        if not (text.isascii() and text.isdigit()) or len(text) > UINT256_DIGITS or int(text) >= 2**256:
            self.fail("invalid")
        return int(text)

    def to_representation(self, value: Any) -> str:
        return str(int(value))


def _address_field(**kwargs: Any) -> serializers.CharField:
    return serializers.RegexField(
        r"^0x[0-9a-fA-F]{40}$", max_length=42, help_text="An EVM address: 0x and 40 hex digits", **kwargs
    )


def _signature_field() -> serializers.CharField:
    return serializers.CharField(max_length=132, trim_whitespace=False, help_text="65 bytes: 0x and 130 hex digits")


# Output shapes


@extend_schema_serializer(component_name="GovernanceTransaction")
class TransactionSerializer(serializers.Serializer):
    """A relayed call in the ledger's outbox: pending -> submitted -> confirmed | failed (``last_error`` says why)."""

    id = serializers.IntegerField()
    kind = serializers.CharField(help_text=" | ".join(GovernanceTransaction.Kind.values))
    status = serializers.CharField(help_text=" | ".join(GovernanceTransaction.Status.values))
    proposal_id = serializers.CharField(help_text="uint256 as a decimal string; empty for a delegation")
    account = serializers.CharField(help_text="Whose signature it relays; empty for queue, execute, settle")
    tx_hash = serializers.CharField(help_text="Empty until signed")
    block_number = serializers.IntegerField(allow_null=True)
    confirmations = serializers.IntegerField()
    last_error = serializers.CharField()
    created_at = serializers.DateTimeField()
    confirmed_at = serializers.DateTimeField(allow_null=True)
    url = serializers.SerializerMethodField(help_text="Where to poll it")

    def get_url(self, row: GovernanceTransaction) -> str:
        return f"/api/governance/transactions/{row.id}/"


@extend_schema_serializer(component_name="GovernanceProposal")
class ProposalSerializer(serializers.Serializer):
    proposal_id = serializers.CharField(help_text="uint256 as a decimal string")
    kind = serializers.CharField(help_text=" | ".join(Proposal.Kind.values))
    state = serializers.CharField(
        help_text=f"{' | '.join(Proposal.State.values)}: the mirror's reading, as of the last confirmed block indexed"
    )
    title = serializers.CharField()
    proposer = serializers.CharField()
    for_votes = UintField()
    against_votes = UintField()
    abstain_votes = UintField()
    quorum = UintField(allow_null=True, help_text="Read at the snapshot block once it is past")
    vote_start = serializers.IntegerField(help_text="The snapshot block: votes weigh as they stood then")
    vote_end = serializers.IntegerField(help_text="The last block in which votes count")
    eta = serializers.IntegerField(allow_null=True, help_text="Chain time (unix seconds) it may be executed from")
    created_at = serializers.DateTimeField()
    created_block = serializers.IntegerField()
    created_tx = serializers.CharField()
    executed_at = serializers.DateTimeField(allow_null=True)
    manifest_hash = serializers.CharField(help_text="A deployment proposal's model version; empty otherwise")
    model_version = serializers.IntegerField(source="model_version_id", allow_null=True)


@extend_schema_serializer(component_name="GovernanceAction")
class ActionSerializer(serializers.Serializer):
    target = serializers.CharField()
    value = UintField()
    calldata = serializers.CharField()
    function = serializers.CharField(help_text="The function called; empty when not one of ours")
    words = serializers.CharField(help_text="What it does, for people")


@extend_schema_serializer(component_name="GovernanceMoment")
class MomentSerializer(serializers.Serializer):
    what = serializers.CharField()
    at = serializers.DateTimeField(allow_null=True)
    block = serializers.IntegerField(allow_null=True)
    tx_hash = serializers.CharField()
    done = serializers.BooleanField(help_text="False for a step still to come")


@extend_schema_serializer(component_name="GovernanceVote")
class VoteSerializer(serializers.Serializer):
    voter = serializers.CharField()
    support = serializers.CharField(source="get_support_display", help_text="against, for or abstain")
    weight = UintField()
    block_number = serializers.IntegerField()
    tx_hash = serializers.CharField()


@extend_schema_serializer(component_name="GovernanceQuorum")
class QuorumSerializer(serializers.Serializer):
    counted = UintField(help_text="For and abstain votes: what counts toward the quorum")
    quorum = UintField(allow_null=True)
    fraction = serializers.FloatField(allow_null=True, help_text="counted / quorum, at most 1")
    reached = serializers.BooleanField()


@extend_schema_serializer(component_name="GovernanceStake")
class StakeSerializer(serializers.Serializer):
    builder = serializers.CharField()
    amount = UintField(help_text="Smallest token unit")
    status = serializers.CharField(help_text="bonded, returned or slashed")
    slashed = UintField()
    bonded_tx = serializers.CharField()
    settled_tx = serializers.CharField()


@extend_schema_serializer(component_name="GovernanceProposalDetail")
class ProposalDetailSerializer(ProposalSerializer):
    description = serializers.CharField()
    chain_state = serializers.CharField(
        allow_null=True, help_text="The Governor's own state now; null when the chain cannot be asked"
    )
    actions = ActionSerializer(many=True, source="actions_in_words")
    timeline = MomentSerializer(many=True, source="moments")
    votes = VoteSerializer(many=True, source="votes.all")
    quorum_progress = QuorumSerializer(source="quorum_now")
    stake = StakeSerializer(allow_null=True, help_text="A deployment proposal's bonded stake; null when none")
    targets = serializers.ListField(child=serializers.CharField())
    values = serializers.ListField(child=serializers.CharField())
    calldatas = serializers.ListField(child=serializers.CharField())
    canceled_at = serializers.DateTimeField(allow_null=True)
    queued_at = serializers.DateTimeField(allow_null=True)
    executed_tx = serializers.CharField()


@extend_schema_serializer(component_name="GovernanceTypedData")
class TypedDataSerializer(serializers.Serializer):
    """What the wallet signs with ``eth_signTypedData_v4``: this object, unchanged."""

    typed_data = serializers.JSONField(help_text="EIP-712 types, primaryType, domain and message")


# Proposals


class ProposalListApi(GovernanceApi):
    """The current governance contracts' proposals, newest first, from the mirror."""

    @schema.read(
        "List proposals",
        page_serializer(ProposalSerializer, "GovernanceProposal"),
        errors={400: error_response()},
        operation_id="governance_proposals_list",
        parameters=[
            OpenApiParameter("state", str, enum=Proposal.State.values, description="Only proposals in this state"),
            OpenApiParameter("kind", str, enum=Proposal.Kind.values, description="Only proposals of this kind"),
        ],
    )
    def get(self, request: Request) -> Response:
        state, kind = request.query_params.get("state") or None, request.query_params.get("kind") or None
        if state is not None and state not in Proposal.State.values:
            raise exceptions.ValidationError({"state": [f"one of {', '.join(Proposal.State.values)}"]})
        if kind is not None and kind not in Proposal.Kind.values:
            raise exceptions.ValidationError({"kind": [f"one of {', '.join(Proposal.Kind.values)}"]})
        return paginated(self, request, selectors.proposals(state=state, kind=kind), ProposalSerializer)


def _chain_state(request: Request, proposal: Proposal) -> str | None:
    if chain_read_limited(request):
        return None
    try:
        return ledger_governance.proposal_state(int(proposal.proposal_id), contracts=proposal.contracts)
    except (chain.ChainError, GovernanceRefused):
        return None


class ProposalDetailApi(GovernanceApi):
    """One proposal: its description, its actions in words, its timeline, votes, tally and quorum progress, and a
    deployment proposal's stake. ``chain_state`` is the Governor's own reading, asked now (within
    CHAIN_READ_RATE_LIMIT per client)."""

    @schema.read(
        "Get a proposal",
        ProposalDetailSerializer,
        operation_id="governance_proposal_retrieve",
        parameters=[PROPOSAL_ID],
    )
    def get(self, request: Request, proposal_id: str) -> Response:
        proposal = _proposal(proposal_id)
        proposal.chain_state = _chain_state(request, proposal)
        proposal.actions_in_words = selectors.actions(proposal)
        proposal.moments = selectors.timeline(proposal)
        proposal.quorum_now = selectors.quorum_progress(proposal)
        return Response(ProposalDetailSerializer(proposal).data)


@extend_schema_serializer(component_name="GovernancePreparedProposal")
class PreparedSerializer(serializers.Serializer):
    """Sign ``typed_data`` with the proposer's wallet, then POST the rest with the signature to ``proposals/relay/``."""

    kind = serializers.CharField()
    targets = serializers.ListField(child=serializers.CharField())
    values = serializers.ListField(child=serializers.CharField())
    calldatas = serializers.ListField(child=serializers.CharField())
    description = serializers.CharField()
    proposal_id = serializers.CharField(help_text="uint256 as a decimal string")
    actions = ActionSerializer(many=True)
    typed_data = serializers.JSONField()
    stake = serializers.CharField(help_text="A deployment proposal's stake (smallest unit), bonded after; else 0")


def _prepared_response(prepared: services.PreparedProposal) -> Response:
    active = services.contracts()
    data = prepared.as_json()
    data["typed_data"] = _typed_json(prepared.typed_data)
    data["actions"] = [
        selectors.decode_action(active, t, v, c)
        for t, v, c in zip(prepared.targets, prepared.values, prepared.calldatas, strict=True)
    ]
    return Response(PreparedSerializer(data).data)


class _Changes(serializers.Serializer):
    name = serializers.ChoiceField(choices=list(services.PARAMETERS))
    values = serializers.DictField(
        child=serializers.JSONField(),
        help_text='The new values by field name, e.g. {"contributors_bps": 6000, "builder_bps": 3000}',
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        fields = services.PARAMETERS[data["name"]]["fields"]
        if set(data["values"]) != set(fields):
            raise serializers.ValidationError({"values": [f"{data['name']} takes {', '.join(fields)}"]})
        for field in fields:
            value = data["values"][field]
            if field == "deployment_gate":
                if not isinstance(value, bool):
                    raise serializers.ValidationError({"values": [f"{field} is true or false"]})
            elif field == "pool":
                if not isinstance(value, str):
                    raise serializers.ValidationError({"values": [f"{field} is an address"]})
            elif isinstance(value, bool) or not isinstance(value, int | str):
                raise serializers.ValidationError({"values": [f"{field} is a whole number (or a decimal string)"]})
        return data


class ProposalPrepareParametersApi(GovernanceWriteApi):
    """Build a proposal changing protocol parameters (one action each) for ``proposer``, one of the user's linked
    wallets, to sign. Nothing is written or sent. Parameters and their fields: reward_split (contributors_bps,
    builder_bps), min_quality_score (min_quality_score), deployment_gate (deployment_gate), deployment_stake
    (deployment_stake, stake_slash_bps), pool (pool)."""

    @extend_schema_serializer(component_name="GovernanceParameterProposalRequest")
    class InputSerializer(serializers.Serializer):
        proposer = _address_field()
        title = serializers.CharField(max_length=200)
        body = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="")
        changes = _Changes(many=True, allow_empty=False, max_length=len(services.PARAMETERS))

    @schema.write("Prepare a parameter proposal", InputSerializer, PreparedSerializer)
    def post(self, request: Request) -> Response:
        data = self.validated(self.InputSerializer, request.data)
        changes = [
            ParameterChangeSpec(c["name"], tuple(c["values"][f] for f in services.PARAMETERS[c["name"]]["fields"]))
            for c in data["changes"]
        ]
        prepared = services.prepare_parameter_proposal(
            user=request.user, proposer=data["proposer"], changes=changes, title=data["title"], body=data["body"]
        )
        return _prepared_response(prepared)


class ProposalPrepareDeploymentApi(GovernanceWriteApi):
    """Build a proposal approving one of the user's model versions for deployment, for ``proposer`` to sign; after
    relaying it, bond its stake (``proposals/<id>/stake/permit/`` then ``.../stake/bond/``). Nothing is written or
    sent. A version the user cannot see is a 404; one they see but do not own is a 403."""

    @extend_schema_serializer(component_name="GovernanceDeploymentProposalRequest")
    class InputSerializer(serializers.Serializer):
        proposer = _address_field()
        version_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
        title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
        body = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="")

    @schema.write(
        "Prepare a deployment proposal",
        InputSerializer,
        PreparedSerializer,
        errors={**WRITE_ERRORS, 404: error_response("No such model version")},
    )
    def post(self, request: Request) -> Response:
        data = self.validated(self.InputSerializer, request.data)
        version = versions_visible_to(user=request.user).filter(pk=data["version_id"]).first()
        if version is None:
            raise exceptions.NotFound("no such model version")
        prepared = services.prepare_deployment_proposal(
            user=request.user, proposer=data["proposer"], version=version, title=data["title"], body=data["body"]
        )
        return _prepared_response(prepared)


class OperationApi(GovernanceWriteApi):
    """One write, as its subclass's ``operation`` decorator describes it: ``service`` (a ``governance.services``
    function) is called with the user, the proposal of a path with a ``proposal_id`` (a 404 before the body is
    read when there is none) and the fields of ``InputSerializer`` (none without one). A relaying service's
    ``GovernanceTransaction`` comes back as a 202; otherwise the EIP-712 typed data for the wallet to sign (nothing
    is written or sent)."""

    InputSerializer: ClassVar[type[serializers.Serializer] | None] = None
    service: ClassVar[Callable[..., Any]]
    relays: ClassVar[bool]

    def post(self, request: Request, proposal_id: str | None = None) -> Response:
        context: dict[str, Any] = {"user": request.user}
        if proposal_id is not None:
            context["proposal"] = _proposal(proposal_id)
        data = {} if self.InputSerializer is None else self.validated(self.InputSerializer, request.data)
        result = type(self).service(**context, **data)
        if self.relays:
            return Response(TransactionSerializer(result).data, status=202)
        return Response({"typed_data": _typed_json(result)})


def operation(
    summary: str, *, service: Callable[..., Any], on_proposal: bool, relays: bool = True
) -> Callable[[type[OperationApi]], type[OperationApi]]:
    """Gives an ``OperationApi`` its service and its schema: the path's proposal id when ``on_proposal``, the view's
    ``InputSerializer`` as the body, and the answer ``relays`` says."""

    def decorate(view: type[OperationApi]) -> type[OperationApi]:
        view.service = staticmethod(service)
        view.relays = relays
        post = schema.write(
            summary,
            view.InputSerializer,
            TransactionSerializer if relays else TypedDataSerializer,
            status=202 if relays else 200,
            errors=PROPOSAL_WRITE_ERRORS if on_proposal else WRITE_ERRORS,
            parameters=[PROPOSAL_ID] if on_proposal else None,
        )
        return extend_schema_view(post=post)(view)

    return decorate


@operation("Relay a signed proposal", service=services.propose, on_proposal=False)
class ProposalRelayApi(OperationApi):
    """Relay a prepared proposal with the proposer's signature of its ``typed_data``: checked as the Governor would
    (the proposer's votes against the threshold, the signature's signer, chain and contract, a replay), then sent."""

    @extend_schema_serializer(component_name="GovernanceProposalRelayRequest")
    class InputSerializer(serializers.Serializer):
        proposer = _address_field()
        targets = serializers.ListField(child=_address_field(), min_length=1, max_length=10)
        values = serializers.ListField(child=UintField(), min_length=1, max_length=10)
        calldatas = serializers.ListField(
            child=serializers.RegexField(r"^0x([0-9a-fA-F]{2})*$", max_length=4096), min_length=1, max_length=10
        )
        description = serializers.CharField(max_length=20_000, trim_whitespace=False)
        signature = _signature_field()


# Votes and stakes


@operation("Get a ballot to sign", service=services.ballot_message, on_proposal=True, relays=False)
class BallotApi(OperationApi):
    """The EIP-712 Ballot ``account`` (a linked wallet) signs to vote ``support`` on the proposal; POST the
    signature to ``proposals/<id>/vote/``. Nothing is written or sent."""

    @extend_schema_serializer(component_name="GovernanceBallotRequest")
    class InputSerializer(serializers.Serializer):
        account = _address_field()
        support = serializers.ChoiceField(choices=[0, 1, 2], help_text="0 against, 1 for, 2 abstain")


@operation("Relay a signed vote", service=services.vote, on_proposal=True)
class VoteApi(OperationApi):
    """Relay a signed ballot: refused unless voting is open, the wallet has not voted, and it had votes at the
    proposal's snapshot block."""

    @extend_schema_serializer(component_name="GovernanceVoteRequest")
    class InputSerializer(BallotApi.InputSerializer):
        signature = _signature_field()


@operation("Get a stake permit to sign", service=services.stake_message, on_proposal=True, relays=False)
class StakePermitApi(OperationApi):
    """The ERC-2612 permit the proposer of a deployment proposal signs to bond its stake (good for an hour); POST
    the signature and the message's ``deadline`` to ``proposals/<id>/stake/bond/``. Nothing is written or sent."""

    @extend_schema_serializer(component_name="GovernanceStakePermitRequest")
    class InputSerializer(serializers.Serializer):
        account = _address_field()


@operation("Relay a stake bond", service=services.bond, on_proposal=True)
class StakeBondApi(OperationApi):
    """Relay the proposer's signed permit and bond the deployment proposal's stake (while it is open)."""

    @extend_schema_serializer(component_name="GovernanceStakeBondRequest")
    class InputSerializer(StakePermitApi.InputSerializer):
        deadline = UintField(help_text="The permit message's deadline")
        signature = _signature_field()


@operation("Queue a proposal", service=services.queue, on_proposal=True)
class ProposalQueueApi(OperationApi):
    """Queue a proposal that passed in the timelock (any signed-in user may ask, as anyone may on chain)."""


@operation("Execute a proposal", service=services.execute, on_proposal=True)
class ProposalExecuteApi(OperationApi):
    """Execute a queued proposal once the timelock's delay is over (chain time)."""


@operation("Settle a stake", service=services.settle, on_proposal=True)
class StakeSettleApi(OperationApi):
    """Settle a decided deployment proposal's stake: returned if it passed, part forfeited to the pool if not."""


# Delegation


@operation("Get a delegation to sign", service=services.delegation_message, on_proposal=False, relays=False)
class DelegationMessageApi(OperationApi):
    """The EIP-712 Delegation ``account`` (a linked wallet) signs to give its votes to ``delegatee`` (itself, to vote
    with its own tokens); good for an hour. POST the signature with the message's ``nonce`` and ``expiry`` to
    ``delegations/relay/``. Nothing is written or sent."""

    @extend_schema_serializer(component_name="GovernanceDelegationRequest")
    class InputSerializer(serializers.Serializer):
        account = _address_field()
        delegatee = _address_field()


@operation("Relay a signed delegation", service=services.delegate, on_proposal=False)
class DelegationRelayApi(OperationApi):
    """Relay a signed delegation (``delegateBySig``)."""

    @extend_schema_serializer(component_name="GovernanceDelegationRelayRequest")
    class InputSerializer(DelegationMessageApi.InputSerializer):
        nonce = UintField()
        expiry = UintField()
        signature = _signature_field()


# Relayed transactions


class TransactionDetailApi(GovernanceApi):
    """A relayed transaction's state. Only whoever asked for it (and staff) may read it; to anyone else it does
    not exist. A submitted one's receipt is checked on the way."""

    permission_classes = [IsAuthenticated]

    @schema.read(
        "Get a relayed transaction",
        TransactionSerializer,
        errors={**SIGNED_IN_ERRORS, **READ_ERRORS},
        parameters=[OpenApiParameter("transaction_id", int, OpenApiParameter.PATH)],
    )
    def get(self, request: Request, transaction_id: str) -> Response:
        if not (transaction_id.isascii() and transaction_id.isdigit()) or int(transaction_id) > MAX_ID:
            raise exceptions.NotFound("no such transaction")
        rows = GovernanceTransaction.objects.all()
        if not request.user.is_staff:
            rows = rows.filter(requested_by=f"user:{request.user.pk}")
        row = rows.filter(pk=int(transaction_id)).first()
        if row is None:
            raise exceptions.NotFound("no such transaction")
        if row.status == GovernanceTransaction.Status.SUBMITTED:
            row = ledger_governance.confirm(row=row)
        return Response(TransactionSerializer(row).data)


# Parameters and voting power


@extend_schema_serializer(component_name="GovernanceParameterChange")
class ChangeSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="As ProtocolParameters names it (contributorsBps, ...)")
    old_value = serializers.CharField()
    new_value = serializers.CharField()
    block_number = serializers.IntegerField()
    changed_at = serializers.DateTimeField()
    tx_hash = serializers.CharField()
    proposal_id = serializers.SerializerMethodField(help_text="The proposal that made it; null at deployment")

    def get_proposal_id(self, change: ParameterChange) -> str | None:
        return change.proposal.proposal_id if change.proposal_id else None


@extend_schema_serializer(component_name="GovernanceParameter")
class ParameterSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    value = serializers.CharField(help_text="Raw: basis points, a score, 0/1, the smallest unit, an address")
    display = serializers.CharField(help_text="For people")
    changed = ChangeSerializer(allow_null=True, help_text="Its last change; null when the mirror has none yet")


class ParameterListApi(GovernanceApi):
    """The rules in force, read from ProtocolParameters (cached until the next executed proposal), each with its
    last change. ``source`` is chain, cached (the chain away: the last values read) or settings (no governance
    contracts yet: the values they will be deployed with)."""

    @extend_schema_serializer(component_name="GovernanceParameters")
    class OutputSerializer(serializers.Serializer):
        source = serializers.ChoiceField(choices=["chain", "cached", "settings"])
        block = serializers.IntegerField(allow_null=True, help_text="The block they were read at")
        parameters = ParameterSerializer(many=True)

    @schema.read(
        "The parameters in force",
        OutputSerializer,
        errors={503: error_response("The chain cannot be read and nothing was read before")},
    )
    def get(self, request: Request) -> Response:
        rules = ledger_governance.parameters()
        data = {"source": rules.source, "block": rules.block, "parameters": selectors.parameters_now()}
        return Response(self.OutputSerializer(data).data)


class ParameterHistoryApi(GovernanceApi):
    """Every change of the parameters, newest first (the first ones come from the deployment), from the mirror."""

    @schema.read(
        "The parameters' history",
        page_serializer(ChangeSerializer, "GovernanceParameterChange"),
        errors={400: error_response()},
        parameters=[
            OpenApiParameter(
                "name", str, enum=list(selectors.PARAMETER_LABELS), description="Only this parameter's changes"
            )
        ],
    )
    def get(self, request: Request) -> Response:
        name = request.query_params.get("name") or None
        if name is not None and name not in selectors.PARAMETER_LABELS:
            raise exceptions.ValidationError({"name": [f"one of {', '.join(selectors.PARAMETER_LABELS)}"]})
        return paginated(self, request, selectors.parameter_history(name=name), ChangeSerializer)


@extend_schema_serializer(component_name="GovernanceVotingPower")
class VotingPowerSerializer(serializers.Serializer):
    account = serializers.CharField()
    balance = UintField(allow_null=True, help_text="Null when read from the mirror (the chain away)")
    votes = UintField(help_text="Current votes (delegated to this account)")
    delegate = serializers.CharField(allow_null=True, help_text="Whom it delegates to; the zero address: nobody yet")
    source = serializers.ChoiceField(choices=["chain", "mirror"])
    votes_cast = serializers.IntegerField()


class VotingPowerApi(GovernanceApi):
    """Each of the signed-in user's linked wallets: its balance, votes, delegate and how many votes it cast."""

    permission_classes = [IsAuthenticated]

    @schema.read("My voting power", VotingPowerSerializer(many=True), errors=SIGNED_IN_ERRORS)
    def get(self, request: Request) -> Response:
        return Response(VotingPowerSerializer(selectors.voting_power(request.user), many=True).data)

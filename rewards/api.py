"""The reward epochs API, mounted at ``/api/rewards/``: every epoch in the open, and a user's own claims; and the
``rewards`` of the run API's ``attribution`` (``run_rewards_data``, an attribution extra of ``attribution.hooks``).

Epochs, their trees, documents and leaf proofs are public (anonymous reads): an epoch pays addresses on a public
chain, and anyone should be able to check what it pays and why. ``claims/`` is the signed-in user's own leaves.
Refusals have the Datanets API's shape ``{"detail", "code"}``; an id that is not a number, an unknown epoch or a
leaf index out of range is a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.errors import SIGNED_IN_ERRORS, error_response
from common.api.pagination import page_serializer, paginated
from common.api.schema import ApiSchema
from common.api.views import BaseApi
from datanets.api import AnchorSerializer
from inference.models import InferenceRun
from ledger.models import RewardEpoch, RewardEpochEntry
from ledger.rewards_selectors import claim_proof

from . import lineage, selectors
from .split import RewardPolicy

TAGS = ["rewards"]
MAX_NUMBER = 2**31 - 1  # the columns are PostgreSQL integers: a larger number names nothing
LEAF_INDEX = OpenApiParameter("index", int, OpenApiParameter.PATH, description="The leaf's index (from 0)")
EPOCH_NUMBER = OpenApiParameter("number", int, OpenApiParameter.PATH, description="The epoch's number (from 1)")
schema = ApiSchema(TAGS)


def _number(text: str, *, what: str) -> int:
    """``text`` as a non-negative integer, or a 404: a path segment that is not one names nothing here."""
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > MAX_NUMBER:
        raise exceptions.NotFound(f"no such {what}")
    return int(text)


def _epoch(number: str) -> RewardEpoch:
    epoch = selectors.epochs().filter(number=_number(number, what="reward epoch")).first()
    if epoch is None:
        raise exceptions.NotFound("no such reward epoch")
    return epoch


class RewardsApi(BaseApi):
    """Reads only, open to anyone."""

    permission_classes = [AllowAny]


@extend_schema_serializer(component_name="RewardDistributorPublication")
class DistributorSerializer(serializers.Serializer):
    chain_id = serializers.IntegerField(allow_null=True)
    contract = serializers.CharField(help_text="RewardDistributor")
    contract_address = serializers.CharField(allow_null=True)
    tx_hash = serializers.CharField(allow_null=True, help_text="publishEpoch's transaction; null until sent")
    block_number = serializers.IntegerField(allow_null=True)


@extend_schema_serializer(component_name="ClaimAnchor")
class ClaimAnchorSerializer(DistributorSerializer):
    epoch = serializers.IntegerField()
    status = serializers.CharField(help_text="The epoch's publication: pending, submitted, confirmed, failed")


@extend_schema_serializer(component_name="ClaimState")
class ClaimStateSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["unclaimed", "in_flight", "claimed"])
    tx_hash = serializers.CharField(allow_null=True)
    block_number = serializers.IntegerField(allow_null=True)


@extend_schema_serializer(component_name="ClaimProof")
class ClaimProofSerializer(serializers.Serializer):
    """``StandardMerkleTree.verify(root, leafEncoding, value, proof)`` checks it off chain; the distributor's
    ``epochInfo(epoch)`` holds ``root`` and ``claim(epoch, index, account, amount, proof)`` pays it."""

    schema = serializers.CharField(help_text="openledger.proof.v1")
    artifact = serializers.CharField(help_text="claim")
    format = serializers.CharField(help_text="standard-v1")
    leafEncoding = serializers.ListField(child=serializers.CharField(), help_text='["uint256","address","uint256"]')
    value = serializers.ListField(child=serializers.CharField(), help_text="[index, account, amount]")
    treeIndex = serializers.IntegerField()
    leaf = serializers.CharField()
    proof = serializers.ListField(child=serializers.CharField())
    root = serializers.CharField()
    anchor = ClaimAnchorSerializer()
    claim = ClaimStateSerializer()


@extend_schema_serializer(component_name="RewardEpoch")
class EpochSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    root = serializers.CharField()
    total = serializers.CharField(help_text="Sum of the leaves, smallest token unit, as a decimal string")
    status = serializers.CharField(help_text="Its publication on the distributor")
    entry_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    document_hash = serializers.CharField(allow_null=True, help_text="keccak256 of the document's JCS bytes")
    chain = DistributorSerializer()


class RewardEpochListApi(RewardsApi):
    """Every reward epoch, newest first."""

    @schema.read(
        "List reward epochs",
        page_serializer(EpochSerializer, "RewardEpoch"),
        errors={},
        operation_id="rewards_epochs_list",
    )
    def get(self, request: Request) -> Response:
        epochs = selectors.epochs_listed()
        return paginated(self, request, epochs, EpochSerializer, shown=lambda page: map(selectors.epoch_summary, page))


class RewardEpochDetailApi(RewardsApi):
    """One epoch: its publication on the distributor, the whole tree (OpenZeppelin's standard-v1 dump), the epoch
    document (``openledger.reward_epoch.v1``: each leaf with the accruals that make its amount), the document's hash
    (keccak256 of its RFC 8785 bytes) and that hash's anchor (LineageRegistry, subject ``reward_epoch:<number>``).
    Epochs closed before documents have ``document`` null."""

    @extend_schema_serializer(component_name="RewardEpochDetail")
    class OutputSerializer(EpochSerializer):
        tree = serializers.JSONField(help_text="StandardMerkleTree standard-v1 dump")
        document = serializers.JSONField(allow_null=True)
        document_anchor = AnchorSerializer(allow_null=True)

    @schema.read(
        "Get a reward epoch", OutputSerializer, operation_id="rewards_epoch_retrieve", parameters=[EPOCH_NUMBER]
    )
    def get(self, request: Request, number: str) -> Response:
        return Response(self.OutputSerializer(selectors.epoch_full(_epoch(number))).data)


class RewardLeafProofApi(RewardsApi):
    """The claim proof of leaf ``index`` of an epoch, kept after the leaf is paid (``claim`` then names the
    transaction)."""

    @schema.read(
        "Get a leaf's claim proof",
        ClaimProofSerializer,
        operation_id="rewards_leaf_proof",
        parameters=[EPOCH_NUMBER, LEAF_INDEX],
    )
    def get(self, request: Request, number: str, index: str) -> Response:
        epoch = _epoch(number)
        entry = (
            RewardEpochEntry.objects.select_related("epoch__contracts")
            .filter(epoch=epoch, index=_number(index, what="leaf"))
            .first()
        )
        if entry is None:
            raise exceptions.NotFound(f"epoch {epoch.number} has no such leaf")
        return Response(ClaimProofSerializer(claim_proof(entry)).data)


@extend_schema_serializer(component_name="RewardClaim")
class ClaimSerializer(serializers.Serializer):
    epoch = serializers.IntegerField()
    index = serializers.IntegerField()
    account = serializers.CharField(help_text="The wallet the leaf pays (EIP-55)")
    amount = serializers.CharField(help_text="Smallest token unit, as a decimal string")
    state = serializers.ChoiceField(choices=["publishing", "claimable", "claiming", "claimed"])
    proof = ClaimProofSerializer()


class RewardClaimListApi(RewardsApi):
    """The signed-in user's leaves in every epoch, newest first: publishing, claimable, being claimed or claimed,
    each with its claim proof (kept after payment, with the claim transaction)."""

    permission_classes = [IsAuthenticated]

    @schema.read(
        "List my reward claims",
        page_serializer(ClaimSerializer, "RewardClaim"),
        errors=SIGNED_IN_ERRORS,
        operation_id="rewards_claims_mine",
    )
    def get(self, request: Request) -> Response:
        entries = selectors.entries_of(user=request.user)
        return paginated(self, request, entries, ClaimSerializer, shown=selectors.claims_with_proofs)


def _rules_data(policy: RewardPolicy) -> dict[str, Any]:
    return {
        "policy_version": policy.version,
        "contributors_bps": policy.contributors_bps,
        "builder_bps": policy.builder_bps,
        "pool_bps": policy.protocol_bps,
        **policy.rules_as_dict(),
    }


def run_rewards_data(*, run: InferenceRun, user: Any) -> list[dict[str, Any]]:
    """The run's reward split: each part of its fee (kind, user, contribution, amount as a decimal string, the
    exact share of the fee it was entitled to, "p/q", and ``rules``: the policy version and basis points it was
    split by, where they were read, ProtocolParameters' address and block); the parts sum to the fee exactly."""
    accruals = selectors.run_accruals(run=run)
    rules = selectors.split_rules(accruals)
    return [
        {
            "kind": a.recipient_kind,
            "user": a.user_id,
            "contribution": a.contribution_id,
            "amount": str(int(a.amount)),
            "share": a.share,
            "rules": _rules_data(rules) if rules is not None else None,
        }
        for a in accruals
    ]


# Reverse lineage (rewards/lineage.py): from a record, a contribution or a contributor to what it reached


class LineageRouteSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["snapshots", "parent"])
    weight = serializers.FloatField(help_text="What this route adds to the version's weight")
    snapshots = serializers.ListField(child=serializers.IntegerField(), source="snapshot_ids")
    parent = serializers.IntegerField(allow_null=True, source="parent_id")
    relation = serializers.CharField(help_text="continued_from | merged_from; empty for snapshots")
    edge_weight = serializers.FloatField(help_text="The merge weight of the parent (1 for a continuation)")


@extend_schema_serializer(component_name="Lineage")
class LineageSerializer(serializers.Serializer):
    subject = serializers.DictField()
    public_only = serializers.BooleanField(help_text="Only what went into public Datanets is shown to this viewer")
    snapshots = serializers.ListField(child=serializers.DictField())
    versions = serializers.ListField(child=serializers.DictField())
    hidden_versions = serializers.IntegerField(help_text="Versions that carry it but that this viewer can't see")
    answers = serializers.DictField(help_text='{"count", "next_before", "next", "results"}, newest first')
    rewards = serializers.DictField(help_text='{"count", "total", "next_before", "next", "results"}, newest first')


CURSOR_PARAMETERS = [
    OpenApiParameter("answers_before", int, description="The answers page cursor (``answers.next_before``)"),
    OpenApiParameter("rewards_before", int, description="The rewards page cursor (``rewards.next_before``)"),
]


def _subject_data(subject: lineage.Subject) -> dict[str, Any]:
    if subject.record is not None:
        record = subject.record
        return {"kind": "record", "id": record.pk, "contribution": record.contribution_id,
                "datanet": record.contribution.datanet.slug, "record_hash": record.record_hash}  # fmt: skip
    if subject.contribution is not None:
        contribution = subject.contribution
        return {"kind": "contribution", "id": contribution.pk, "datanet": contribution.datanet.slug,
                "contributor": contribution.contributor.get_username()}  # fmt: skip
    return {"kind": "contributor", "username": subject.contributor.get_username()}


def _next_url(request: Request, key: str, cursor: int | None) -> str | None:
    if cursor is None:
        return None
    query = request.query_params.copy()
    query[key] = str(cursor)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def lineage_data(request: Request, page: lineage.LineagePage) -> dict[str, Any]:
    """The page's facts as the API returns them: amounts as decimal strings, shares of snapshots as "p/q"."""
    return {
        "subject": _subject_data(page.subject),
        "public_only": page.subject.public_only,
        "snapshots": [
            {
                "id": s.id,
                "datanet": s.datanet_slug,
                "number": s.number,
                "records": s.record_count,
                "held": s.held,
                "share": f"{s.share.numerator}/{s.share.denominator}",
            }
            for s in page.snapshots
        ],
        "versions": [
            {
                "id": v.pk,
                "name": v.name,
                "owner": v.owner.get_username(),
                "published": v.published,
                "weight": r.weight,
                "held": r.held,
                "trained_records": r.trained_records,
                "routes": LineageRouteSerializer(r.routes, many=True).data,
            }
            for v, r in page.versions
        ],
        "hidden_versions": page.hidden_versions,
        "answers": {
            "count": page.answer_count,
            "next_before": page.answers.next_before,
            "next": _next_url(request, "answers_before", page.answers.next_before),
            "results": [
                {
                    "run": a.run_id,
                    "run_public_id": str(a.run_public_id) if a.run_public_id else None,
                    "created_at": a.created_at.isoformat(),
                    "version": a.version_id if a.version_name else None,
                    "share": a.share,
                    "records": a.records,
                }
                for a in page.answers.items
            ],
        },
        "rewards": {
            "count": page.accrual_count,
            "total": str(page.earned),
            "next_before": page.accruals.next_before,
            "next": _next_url(request, "rewards_before", page.accruals.next_before),
            "results": [
                {
                    "id": e.id,
                    "run": e.run_id,
                    "run_public_id": str(e.run_public_id) if e.run_public_id else None,
                    "amount": str(e.amount),
                    "share": e.share,
                    "epoch": e.epoch,
                    "contribution": e.contribution_id,
                    "datanet": e.datanet_slug,
                    "created_at": e.created_at.isoformat(),
                }
                for e in page.accruals.items
            ],
        },
    }


class LineageApi(RewardsApi):
    """Open to anyone, as the page is: each viewer sees what the page would show them."""

    def lineage(self, request: Request, subject: lineage.Subject | None) -> Response:
        if subject is None:
            raise exceptions.NotFound("nothing to show: no such subject, or not visible to you")
        try:
            answers_before = lineage.cursor(request.query_params.get("answers_before"))
            rewards_before = lineage.cursor(request.query_params.get("rewards_before"))
        except ValueError as e:
            raise exceptions.ValidationError({"cursor": [str(e)]}) from None
        page = lineage.lineage_page(
            subject=subject, user=request.user, answers_before=answers_before, accruals_before=rewards_before
        )
        return Response(lineage_data(request, page))


def lineage_schema(summary: str, operation_id: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """The schema of a ``LineageApi``'s ``get``: the page cursors, the lineage or a refusal."""
    return schema.read(
        summary,
        LineageSerializer,
        errors={400: error_response("A malformed page cursor"), **schema.read_errors},
        operation_id=operation_id,
        parameters=CURSOR_PARAMETERS,
    )


class RecordLineageApi(LineageApi):
    """Where one record went: the snapshots that hold it, the versions trained on them (directly, or through a
    continuation or a merge, with weights), a keyset page of the answers that credited it and one of its
    contribution's rewards on those answers."""

    @lineage_schema("A record's reverse lineage", "rewards_lineage_record")
    def get(self, request: Request, record_id: str) -> Response:
        subject = lineage.record_subject(user=request.user, record_id=_number(record_id, what="record"))
        return self.lineage(request, subject)


class ContributionLineageApi(LineageApi):
    """Where one contribution's records went (as ``RecordLineageApi``), and what it earned."""

    @lineage_schema("A contribution's reverse lineage", "rewards_lineage_contribution")
    def get(self, request: Request, contribution_id: str) -> Response:
        number = _number(contribution_id, what="contribution")
        return self.lineage(request, lineage.contribution_subject(user=request.user, contribution_id=number))


class ContributorLineageApi(LineageApi):
    """Where everything a contributor gave went: all of it for themselves and staff, what went into public Datanets
    for anyone else (``public_only``)."""

    @lineage_schema("A contributor's reverse lineage", "rewards_lineage_contributor")
    def get(self, request: Request, username: str) -> Response:
        return self.lineage(request, lineage.contributor_subject(user=request.user, username=username))

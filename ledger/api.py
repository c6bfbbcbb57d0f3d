"""/api/chain/: where this server anchors, for anyone who wants to check it without trusting it."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.views import BaseApi

from .selectors import chain_facts

TAGS = ["chain"]


@extend_schema_serializer(component_name="ChainContract")
class ContractSerializer(serializers.Serializer):
    name = serializers.ChoiceField(choices=["LineageRegistry", "RewardToken", "RewardDistributor"])
    chain_id = serializers.IntegerField()
    address = serializers.CharField(help_text="EIP-55 checksummed")
    deploy_block = serializers.IntegerField(
        allow_null=True, help_text="The deployment transaction's block; null while the chain can't be asked for it"
    )
    deploy_tx_hash = serializers.CharField()
    active = serializers.BooleanField()
    abi = serializers.ListField(
        child=serializers.DictField(),
        allow_null=True,
        help_text="The committed compiler output's ABI (ledger/contracts/build/); null for an old deployment whose "
        "bytecode is not the committed one",
    )
    deployed_at = serializers.DateTimeField()
    retired_at = serializers.DateTimeField(allow_null=True)
    retired_reason = serializers.CharField(help_text="Why it was retired (a reset chain, a redeployment); empty if not")


@extend_schema_serializer(component_name="Chain")
class ChainSerializer(serializers.Serializer):
    chain_id = serializers.IntegerField(help_text="The chain this server anchors to")
    note = serializers.CharField(help_text="Empty, or a sentence saying which contracts are not deployed yet")
    contracts = ContractSerializer(many=True, help_text="The contracts in use on chain_id; empty before any deployment")
    retired = ContractSerializer(many=True, help_text="Older deployments, newest first, with why they were retired")
    anchor_kinds = serializers.DictField(
        child=serializers.IntegerField(), help_text="Anchor kind -> the uint8 kind LineageRegistry stores"
    )
    subjects = serializers.DictField(child=serializers.CharField(), help_text="Anchor kind -> its subject string")
    subject_id = serializers.CharField(help_text="How a subject string becomes the bytes32 subject id")
    leaf_encodings = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Tree -> the OpenZeppelin StandardMerkleTree leaf encoding of its values",
    )
    leaf_values = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), help_text="Tree -> what each value part is"
    )
    leaf_hash = serializers.CharField()


class ChainApi(BaseApi):
    """The chain id, every contract this server uses there (LineageRegistry, RewardToken, RewardDistributor) with
    address, deploy block and transaction and ABI, the retired deployments, the anchor kinds' codes, the subject
    formats and the leaf encodings: what a verifier needs besides an RPC endpoint. Never deploys anything."""

    permission_classes = [AllowAny]

    @extend_schema(summary="The chain and its contracts", responses={200: ChainSerializer}, tags=TAGS)
    def get(self, request: Request) -> Response:
        return Response(ChainSerializer(chain_facts()).data)

"""The accounts API, mounted at ``/api/``: the signed-in user (``me/``) and their wallets."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.errors import error_response
from common.api.views import BaseApi

from .selectors import user_roles, wallets_of
from .services import WalletError, signing_site, wallet_challenge_issue, wallet_link, wallet_unlink


def _refused(error: WalletError) -> Response:
    return Response({"detail": error.message, "code": error.code}, status=400)


@extend_schema_serializer(component_name="Wallet")
class WalletSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    address = serializers.CharField(help_text="EIP-55 checksummed")
    chain_id = serializers.IntegerField()
    linked_at = serializers.DateTimeField()


class MeApi(BaseApi):
    """The signed-in user: identity, roles and linked wallets (the first is the primary one)."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="Me")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        email = serializers.EmailField()
        date_joined = serializers.DateTimeField()
        roles = serializers.ListField(child=serializers.CharField(), help_text="contributor, global curator, staff")
        is_global_curator = serializers.BooleanField()
        is_staff = serializers.BooleanField()
        wallets = WalletSerializer(many=True)

    @extend_schema(summary="Who am I", responses={200: OutputSerializer}, tags=["accounts"])
    def get(self, request: Request) -> Response:
        user = request.user
        data = {
            "id": user.id,
            "username": user.get_username(),
            "email": user.email,
            "date_joined": user.date_joined,
            "roles": user_roles(user=user),
            "is_global_curator": user.is_global_curator,
            "is_staff": user.is_staff,
            "wallets": wallets_of(user=user),
        }
        return Response(self.OutputSerializer(data).data)


class WalletChallengeApi(BaseApi):
    """Issue a single-use Sign-In with Ethereum (EIP-4361) message for an address.

    Sign ``message`` with the address's key (EIP-191 ``personal_sign``), then POST it to ``/api/wallets/`` before
    ``expires_at``.
    """

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="WalletChallengeRequest")
    class InputSerializer(serializers.Serializer):
        address = serializers.CharField(max_length=64, help_text="0x + 40 hex digits; mixed case must be EIP-55")

    @extend_schema_serializer(component_name="WalletChallenge")
    class OutputSerializer(serializers.Serializer):
        nonce = serializers.CharField()
        address = serializers.CharField()
        chain_id = serializers.IntegerField()
        message = serializers.CharField(help_text="The exact text to sign; LF line ends")
        issued_at = serializers.DateTimeField()
        expires_at = serializers.DateTimeField()

    @extend_schema(
        summary="Get a message to sign",
        request=InputSerializer,
        responses={201: OutputSerializer, 400: error_response("Malformed or taken")},
        tags=["accounts"],
    )
    def post(self, request: Request) -> Response:
        data = self.validated(self.InputSerializer, request.data)
        try:
            address = data["address"]
            challenge = wallet_challenge_issue(user=request.user, address=address, **signing_site(request))
        except WalletError as e:
            return _refused(e)
        return Response(self.OutputSerializer(challenge).data, status=201)


class WalletListApi(BaseApi):
    """The signed-in user's wallets."""

    permission_classes = [IsAuthenticated]

    @extend_schema_serializer(component_name="WalletLinkRequest")
    class InputSerializer(serializers.Serializer):
        nonce = serializers.CharField(max_length=64)
        message = serializers.CharField(trim_whitespace=False, help_text="The challenge's message, unchanged")
        signature = serializers.CharField(max_length=200, help_text="0x + 130 hex digits (65 bytes)")

    @extend_schema(
        summary="List my wallets",
        description="Newest first; the first is the primary wallet.",
        responses={200: WalletSerializer(many=True)},
        tags=["accounts"],
    )
    def get(self, request: Request) -> Response:
        return Response(WalletSerializer(wallets_of(user=request.user), many=True).data)

    @extend_schema(
        summary="Link a wallet",
        description=(
            "Verify a signed challenge from `POST /api/wallets/challenge/` and link its address. The challenge is "
            "single-use and expires; a refusal (reused, expired, forged, malformed, wrong nonce, address taken) "
            "changes nothing."
        ),
        request=InputSerializer,
        responses={
            201: WalletSerializer,
            400: error_response(),
        },
        tags=["accounts"],
    )
    def post(self, request: Request) -> Response:
        data = self.validated(self.InputSerializer, request.data)
        try:
            wallet = wallet_link(user=request.user, **data)
        except WalletError as e:
            return _refused(e)
        return Response(WalletSerializer(wallet).data, status=201)


class WalletUnlinkApi(BaseApi):
    """Unlink one of the signed-in user's wallets. Another user's wallet is a 404, as if it did not exist."""

    permission_classes = [IsAuthenticated]

    @extend_schema(summary="Unlink a wallet", responses={204: None}, tags=["accounts"])
    def delete(self, request: Request, wallet_id: int) -> Response:
        wallet = get_object_or_404(wallets_of(user=request.user), id=wallet_id)
        wallet_unlink(wallet=wallet)
        return Response(status=204)

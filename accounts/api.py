"""The accounts API, mounted at ``/api/``: the signed-in user (``me/``) and their wallets."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.errors import error_response
from common.api.schema import ApiSchema
from common.api.views import BaseApi

from .selectors import user_roles, wallets_of
from .services import WalletError, signing_site, wallet_challenge_issue, wallet_link, wallet_unlink

# the signed-in user's own things: nothing to find or not find; a refusal of a wallet is a 400 in the one shape
schema = ApiSchema(["accounts"], read_errors={}, write_errors={400: error_response()})


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

    @schema.read("Who am I", OutputSerializer)
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

    @schema.write(
        "Get a message to sign",
        InputSerializer,
        OutputSerializer,
        status=201,
        errors={400: error_response("Malformed or taken")},
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

    @schema.read(
        "List my wallets", WalletSerializer(many=True), description="Newest first; the first is the primary wallet."
    )
    def get(self, request: Request) -> Response:
        return Response(WalletSerializer(wallets_of(user=request.user), many=True).data)

    @schema.write(
        "Link a wallet",
        InputSerializer,
        WalletSerializer,
        status=201,
        description=(
            "Verify a signed challenge from `POST /api/wallets/challenge/` and link its address. The challenge is "
            "single-use and expires; a refusal (reused, expired, forged, malformed, wrong nonce, address taken) "
            "changes nothing."
        ),
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

    @schema.operation("Unlink a wallet", {204: None})
    def delete(self, request: Request, wallet_id: int) -> Response:
        wallet = get_object_or_404(wallets_of(user=request.user), id=wallet_id)
        wallet_unlink(wallet=wallet)
        return Response(status=204)

"""Accruals are written by the fee split only and closed by the epoch close only: money is never hand-edited, so the
admin only shows them."""

from __future__ import annotations

from django.contrib import admin

from common.admin import ReadOnlyAdmin

from .models import RewardAccrual


@admin.register(RewardAccrual)
class RewardAccrualAdmin(ReadOnlyAdmin):
    list_display = ("id", "run", "recipient_kind", "user", "contribution", "datanet", "amount", "epoch", "created_at")
    list_filter = ("recipient_kind", "policy_version", "epoch")
    search_fields = ("user__username",)
    raw_id_fields = ("run", "user", "contribution", "datanet")

"""Rewards records: the accruals that split each attributed run's fee, until they close into a ledger reward epoch.

``RewardAccrual`` was attribution's model until issue 14 (item 2): it keeps its table, its constraint and index
names, so the move was a change of Django's state only (``attribution`` 0004, ``rewards`` 0001).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class RewardAccrual(models.Model):
    """One part of one run's fee, owed to a contributor, the model's builder or the protocol pool.

    Amounts are integers in the token's smallest unit; the accruals of a run sum exactly to its fee. A contributor's
    accrual is per contribution (so earnings roll up per Datanet and per contribution), a builder's per builder (the
    answer of a composite pays each component's owner); a contributor without a
    linked wallet accrues all the same and claims once one is linked. ``epoch`` is set when the accrual is closed
    into a ledger reward epoch.
    """

    class Kind(models.TextChoices):
        CONTRIBUTOR = "contributor"
        BUILDER = "builder"
        POOL = "pool"

    run = models.ForeignKey("inference.InferenceRun", on_delete=models.PROTECT, related_name="accruals")
    recipient_kind = models.CharField(max_length=12, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="accruals"
    )
    contribution = models.ForeignKey(
        "datanets.Contribution", null=True, blank=True, on_delete=models.PROTECT, related_name="accruals"
    )
    datanet = models.ForeignKey(
        "datanets.Datanet", null=True, blank=True, on_delete=models.PROTECT, related_name="accruals"
    )
    amount = models.DecimalField(max_digits=78, decimal_places=0, help_text="Smallest token units.")
    share = models.CharField(
        max_length=80, help_text='Exact fraction of the fee this part was entitled to before rounding, "p/q".'
    )
    policy_version = models.PositiveIntegerField(help_text="The reward policy that split the fee.")
    # the rules the fee was split by (issue 16): empty on the accruals split before governance, whose basis points
    # are their policy version's fixed ones (70 / 20 / 10)
    contributors_bps = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The contributors' part of the fee, in basis points (empty: the policy's)."
    )
    builder_bps = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The builder's part of the fee, in basis points (empty: the policy's)."
    )
    rules_source = models.CharField(
        max_length=12,
        blank=True,
        help_text="Where the basis points were read: chain, cached (the chain away), settings (no governance "
        "contracts yet), fallback (the chain unreadable, nothing cached); empty: the policy version's.",
    )
    rules_address = models.CharField(max_length=42, blank=True, help_text="The ProtocolParameters contract read.")
    rules_block = models.PositiveBigIntegerField(null=True, blank=True, help_text="The block it was read at.")
    epoch = models.PositiveIntegerField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "attribution_rewardaccrual"  # attribution's table: the model moved here, the rows stayed
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="attribution_accrual_not_negative"),
            models.CheckConstraint(
                condition=Q(recipient_kind="pool", user__isnull=True)
                | Q(recipient_kind__in=["contributor", "builder"], user__isnull=False),
                name="attribution_accrual_recipient",
            ),
            models.CheckConstraint(
                condition=~Q(recipient_kind="contributor") | Q(contribution__isnull=False, datanet__isnull=False),
                name="attribution_contributor_accrual_has_contribution",
            ),
            # exactly-once crediting, in the database: a run's fee is split once (run_attribute's claim), so one
            # pool part, one part per builder (a composite's answer has several), and one part per contribution
            models.UniqueConstraint(
                fields=["run", "recipient_kind"],
                condition=Q(recipient_kind="pool"),
                name="attribution_accrual_once_per_run_pool",
            ),
            models.UniqueConstraint(
                fields=["run", "user"],
                condition=Q(recipient_kind="builder"),
                name="attribution_accrual_once_per_run_builder",
            ),
            models.UniqueConstraint(
                fields=["run", "contribution"],
                condition=Q(recipient_kind="contributor"),
                name="attribution_accrual_once_per_run_contribution",
            ),
        ]
        indexes = [
            models.Index(fields=["user", "epoch"], name="attribution_user_id_e3c618_idx"),
            models.Index(fields=["recipient_kind", "epoch"], name="attribution_recipie_8fe9e0_idx"),
            models.Index(fields=["contribution"], name="attribution_contrib_5212f9_idx"),
        ]

    def __str__(self) -> str:
        pool = self.recipient_kind == self.Kind.POOL
        recipient = "the protocol pool" if pool else f"{self.recipient_kind} {self.user.get_username()}"
        return f"{self.amount} to {recipient} for run {self.run_id}"

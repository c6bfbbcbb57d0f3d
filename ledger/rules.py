"""The rules in force for the work that must go on whatever the chain does: a run's fee split and a snapshot's
quality minimum. ``governance.parameters()`` reads them from ProtocolParameters (cached until an executed
proposal, the last value kept for when the chain is away); here, when the chain cannot be read and nothing was
ever cached, the GOVERNANCE_* settings' values stand in, marked ``source="fallback"`` wherever they are recorded,
so that an answer is still paid and a snapshot still freezes, and anyone can tell which rules were not read from
chain. The deployment gate reads its on/off switch here too, but an approval that cannot be read is never
assumed (``inference.services``)."""

from __future__ import annotations

import logging

from django.conf import settings

from . import chain, deployments, governance

logger = logging.getLogger(__name__)

FALLBACK = "fallback"


def rules_in_force() -> governance.Parameters:
    """``governance.parameters()``; when it cannot read the chain (and has no last value), the settings' values
    with ``source="fallback"``, no address and no block. Never raises a chain error."""
    try:
        return governance.parameters()
    except chain.ChainError as e:
        logger.warning("the rules in force are unreadable (%s): using the GOVERNANCE_* settings' values", e)
        return fallback_parameters()


def fallback_parameters() -> governance.Parameters:
    """The GOVERNANCE_* settings' values, as ``source="fallback"`` (the pool may be unknown: then empty)."""
    contributors, builder = settings.GOVERNANCE_CONTRIBUTORS_BPS, settings.GOVERNANCE_BUILDER_BPS
    try:
        pool = str(deployments.governance_deploy_settings()["pool"])
    except chain.ChainError:
        pool = ""
    return governance.Parameters(
        contributors_bps=contributors,
        builder_bps=builder,
        pool_bps=10_000 - contributors - builder,
        min_quality_score=settings.GOVERNANCE_MIN_QUALITY_SCORE,
        deployment_gate=settings.GOVERNANCE_DEPLOYMENT_GATE,
        deployment_stake=int(settings.GOVERNANCE_DEPLOYMENT_STAKE),
        stake_slash_bps=settings.GOVERNANCE_STAKE_SLASH_BPS,
        pool=pool,
        source=FALLBACK,
    )

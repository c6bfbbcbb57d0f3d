"""The selectors on a real lifecycle: actions in words, a timeline in order, quorum progress, parameters now."""

from __future__ import annotations

import pytest

from governance import indexer, selectors
from governance.models import Proposal

from .test_indexer import gov, lifecycle  # noqa: F401

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def test_a_proposal_reads_in_words_with_its_timeline_and_quorum(gov, anvil) -> None:  # noqa: F811
    proposal_id, deployment_id = lifecycle(gov, anvil)
    indexer.index_to_head(gov)
    proposal = Proposal.objects.get(proposal_id=str(proposal_id))

    [action] = selectors.actions(proposal)
    assert action.words == (
        "Set the reward split to 60.00 % for contributors, 30.00 % for the builder and 10.00 % for the pool"
    )
    steps = [m.what for m in selectors.timeline(proposal)]
    assert steps[0] == "Proposed" and steps[-1] == "Executed" and "Voting opens" in steps
    assert selectors.quorum_progress(proposal)["reached"] is True
    deployment = Proposal.objects.get(proposal_id=str(deployment_id))
    assert selectors.actions(deployment)[0].words.startswith("Approve the model version (manifest 0x77777777")
    assert "Stake slashed" in [m.what for m in selectors.timeline(deployment)]
    now = {row["name"]: row for row in selectors.parameters_now()}
    assert now["contributorsBps"]["display"] == "60.00 %" and now["contributorsBps"]["changed"].proposal == proposal
    assert selectors.state_counts()["executed"] == 1

"""A governance world for the whole-site tests (every page in production mode, every page on a phone)."""

from __future__ import annotations

from eth_account import Account

from governance import indexer
from governance.models import Proposal
from ledger import chain
from ledger.tests.gov import delegate_self, fund, governance_contracts, propose


def a_proposal() -> Proposal:
    """Governance deployed on the session's anvil and one parameter proposal in the mirror, by a voter paid through a
    real epoch who delegated to herself."""
    gov = governance_contracts()
    key = Account.create()
    fund({key: 10**18})
    delegate_self(key, gov)
    chain.connect().provider.make_request("anvil_mine", ["0x1"])  # votes count from the block after delegating
    call = chain.contract("ProtocolParameters", gov.parameters_address).functions.setRewardSplit(6500, 2500)
    proposal_id, _ = propose(key, [gov.parameters_address], [call._encode_transaction_data()],
                             "# Pay builders a little more\n\n65 / 25 / 10, *for a season*.")  # fmt: skip
    indexer.index_to_head(gov)
    return Proposal.objects.get(proposal_id=str(proposal_id))

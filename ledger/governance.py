"""Governance on chain, as the ledger sees it: the rules in force (ProtocolParameters, ModelRegistry approvals),
read from chain and cached until the next executed proposal; the EIP-712 messages people sign; and the relay of
their signatures (and of the steps anyone may take) through the signed-transaction outbox.

- **Reads.** ``parameters()`` and ``is_approved()`` read the active governance contracts by eth_call and cache the
  answer under a generation number that ``rules_changed()`` bumps (the governance app calls it when it indexes a
  ``ProposalExecuted``: only an executed proposal changes a rule, since the timelock owns both contracts). Without
  contracts on this chain yet, the values new contracts would be deployed with are the rules (``source`` says so);
  with the chain away, the last value read.
- **Signatures.** ``delegation_typed_data``, ``ballot_typed_data``, ``proposal_typed_data`` and
  ``permit_typed_data`` build exactly what a wallet signs (``eth_signTypedData_v4``): domains bound to this chain id
  and the contract's address, the signer's current nonce, so a signature is good once, on one chain, for one
  contract.
- **Relays.** ``relay_*`` and ``request_*`` check first what the contract would check (and say it in words: below
  the proposal threshold, already voted, voting closed, the timelock not over, a defeated proposal...), then write a
  ``GovernanceTransaction`` and send it from the server's signer, which pays the gas. Anything refused raises
  ``GovernanceRefused`` and writes and sends nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction
from eth_abi import encode as abi_encode
from eth_utils import is_address, to_checksum_address

from . import chain, deployments, hashing, transactions
from .models import GovernanceContracts, GovernanceTransaction, SignedTransaction

logger = logging.getLogger(__name__)

Kind = GovernanceTransaction.Kind
Status = SignedTransaction.Status

# IGovernor.ProposalState, in the contract's order
PROPOSAL_STATES = ("pending", "active", "canceled", "defeated", "succeeded", "queued", "expired", "executed")
SUPPORT = {"against": 0, "for": 1, "abstain": 2}
TOKEN_DOMAIN_NAME = "OpenLedger Test Reward"
GOVERNOR_DOMAIN_NAME = "OpenLedger Governor"
_GENERATION_KEY = "ledger:governance:generation"
_LAST_PARAMETERS_KEY = "ledger:governance:parameters:last"
_CACHE_SECONDS = 24 * 3600
_UINT256_LIMIT = 1 << 256


class GovernanceRefused(Exception):
    """A governance step that cannot be taken, with a sentence for the person who asked. ``code`` is stable for
    callers: bad_signature, replayed, below_threshold, already_voted, not_active, no_votes, not_succeeded,
    not_ready, not_decided, not_deployment, already_bonded, exists, bad_input, unavailable, refused."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Parameters:
    """The rules in force: ``source`` is ``chain`` (read from ProtocolParameters at ``block``), ``cached`` (the
    last value read, the chain being away) or ``settings`` (no governance contracts on this chain yet: the values
    they will be deployed with)."""

    contributors_bps: int
    builder_bps: int
    pool_bps: int
    min_quality_score: int
    deployment_gate: bool
    deployment_stake: int
    stake_slash_bps: int
    pool: str
    source: str
    block: int | None = None
    address: str = ""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["deployment_stake"] = str(self.deployment_stake)
        return data


# Reads


def rules_changed() -> None:
    """Forget every cached rule: the governance indexer calls this when it sees a ProposalExecuted."""
    try:
        cache.incr(_GENERATION_KEY)
    except ValueError:
        cache.set(_GENERATION_KEY, 1, None)


def _generation() -> int:
    return int(cache.get(_GENERATION_KEY) or 0)


def _settings_parameters() -> Parameters:
    config = deployments.governance_deploy_settings()
    return Parameters(
        contributors_bps=config["contributors_bps"],
        builder_bps=config["builder_bps"],
        pool_bps=10_000 - config["contributors_bps"] - config["builder_bps"],
        min_quality_score=config["min_quality_score"],
        deployment_gate=config["deployment_gate"],
        deployment_stake=int(config["deployment_stake"]),
        stake_slash_bps=config["stake_slash_bps"],
        pool=config["pool"],
        source="settings",
    )


def read_parameters(contracts: GovernanceContracts, *, block: int | str = "latest") -> Parameters:
    """ProtocolParameters at ``block``, by one eth_call (no cache)."""
    number = chain.block_number() if block == "latest" else int(block)
    c, b, quality, gate, stake, slash, pool = chain.call(
        "ProtocolParameters", contracts.parameters_address, "all", block=number
    )
    return Parameters(
        contributors_bps=c,
        builder_bps=b,
        pool_bps=10_000 - c - b,
        min_quality_score=quality,
        deployment_gate=bool(gate),
        deployment_stake=int(stake),
        stake_slash_bps=slash,
        pool=pool,
        source="chain",
        block=number,
        address=contracts.parameters_address,
    )


def parameters() -> Parameters:
    """The rules in force (see the module docstring for where they come from); one eth_call per executed proposal."""
    contracts = GovernanceContracts.objects.current()
    if contracts is None:
        return _settings_parameters()
    key = f"ledger:governance:parameters:{contracts.parameters_address}:{_generation()}"
    cached = cache.get(key)
    if cached is not None:
        return Parameters(**cached)
    try:
        value = read_parameters(contracts)
    except chain.ChainError as e:
        last = cache.get(_LAST_PARAMETERS_KEY)
        if last is not None and last.get("address") == contracts.parameters_address:
            logger.warning("ProtocolParameters unreadable (%s): using the last values read", e)
            return Parameters(**{**last, "source": "cached"})
        raise
    cache.set(key, asdict(value), _CACHE_SECONDS)
    cache.set(_LAST_PARAMETERS_KEY, asdict(value), None)
    return value


def is_approved(manifest_hash: str) -> bool:
    """Whether ModelRegistry approved the version with this manifest hash (cached until the next executed proposal).
    False when no governance contracts exist on this chain."""
    contracts = GovernanceContracts.objects.current()
    if contracts is None:
        return False
    key = f"ledger:governance:approved:{contracts.registry_address}:{_generation()}:{manifest_hash.lower()}"
    cached = cache.get(key)
    if cached is not None:
        return bool(cached)
    value = bool(chain.call("ModelRegistry", contracts.registry_address, "isApproved", _bytes32(manifest_hash)))
    cache.set(key, value, _CACHE_SECONDS)
    return value


def proposal_state(proposal_id: int, *, contracts: GovernanceContracts | None = None) -> str:
    """The Governor's state of the proposal, as a word (``PROPOSAL_STATES``); raises GovernanceRefused when the
    Governor does not know it."""
    contracts = contracts or _active()
    try:
        index = chain.call("OpenLedgerGovernor", contracts.governor_address, "state", int(proposal_id))
    except chain.ContractReverted as e:
        if "GovernorNonexistentProposal" in str(e):
            raise GovernanceRefused("the Governor knows no such proposal", code="bad_input") from e
        raise
    return PROPOSAL_STATES[index]


@dataclass(frozen=True)
class Tally:
    against: int
    for_: int
    abstain: int
    quorum: int
    snapshot: int
    deadline: int
    state: str

    @property
    def quorum_votes(self) -> int:
        """What counts toward the quorum (GovernorCountingSimple: for and abstain)."""
        return self.for_ + self.abstain


def tally(proposal_id: int, *, contracts: GovernanceContracts | None = None) -> Tally:
    """The proposal's votes, quorum (at its snapshot block), snapshot and deadline blocks, and state."""
    contracts = contracts or _active()
    governor = contracts.governor_address
    state = proposal_state(proposal_id, contracts=contracts)
    against, for_, abstain = chain.call("OpenLedgerGovernor", governor, "proposalVotes", int(proposal_id))
    snapshot = int(chain.call("OpenLedgerGovernor", governor, "proposalSnapshot", int(proposal_id)))
    deadline = int(chain.call("OpenLedgerGovernor", governor, "proposalDeadline", int(proposal_id)))
    # quorum(t) needs t in the past; a pending proposal's snapshot is still to come
    latest = chain.block_number()
    quorum = int(chain.call("OpenLedgerGovernor", governor, "quorum", min(snapshot, max(latest - 1, 0))))
    return Tally(against, for_, abstain, quorum, snapshot, deadline, state)


def voting_power(account: str, *, contracts: GovernanceContracts | None = None) -> dict[str, Any]:
    """An account's balance, current votes and delegate (the zero address: not delegated yet)."""
    contracts = contracts or _active()
    token = contracts.rewards.token_address
    address = _address(account, "account")
    return {
        "account": address,
        "balance": int(chain.call("RewardToken", token, "balanceOf", address)),
        "votes": int(chain.call("RewardToken", token, "getVotes", address)),
        "delegate": str(chain.call("RewardToken", token, "delegates", address)),
    }


# EIP-712 messages


def _domain(name: str, address: str, chain_id: int) -> dict[str, Any]:
    return {"name": name, "version": "1", "chainId": chain_id, "verifyingContract": to_checksum_address(address)}


_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def _typed(domain: dict[str, Any], primary: str, fields: list[tuple[str, str]], message: dict[str, Any]) -> dict:
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, primary: [{"name": n, "type": t} for n, t in fields]},
        "primaryType": primary,
        "domain": domain,
        "message": message,
    }


def token_nonce(account: str, *, contracts: GovernanceContracts | None = None) -> int:
    """The token's nonce for ``account`` (shared by permits and signed delegations)."""
    contracts = contracts or _active()
    return int(chain.call("RewardToken", contracts.rewards.token_address, "nonces", _address(account, "account")))


def governor_nonce(account: str, *, contracts: GovernanceContracts | None = None) -> int:
    """The Governor's nonce for ``account`` (shared by signed votes and signed proposals)."""
    contracts = contracts or _active()
    return int(chain.call("OpenLedgerGovernor", contracts.governor_address, "nonces", _address(account, "account")))


def delegation_typed_data(
    delegator: str, delegatee: str, *, expiry: int, contracts: GovernanceContracts | None = None
) -> dict[str, Any]:
    """What ``delegator`` signs to delegate their votes to ``delegatee`` (ERC20Votes ``delegateBySig``)."""
    contracts = contracts or _active()
    message = {
        "delegatee": _address(delegatee, "delegatee"),
        "nonce": token_nonce(delegator, contracts=contracts),
        "expiry": int(expiry),
    }
    domain = _domain(TOKEN_DOMAIN_NAME, contracts.rewards.token_address, contracts.chain_id)
    fields = [("delegatee", "address"), ("nonce", "uint256"), ("expiry", "uint256")]
    return _typed(domain, "Delegation", fields, message)


def ballot_typed_data(
    proposal_id: int, support: int, voter: str, *, contracts: GovernanceContracts | None = None
) -> dict[str, Any]:
    """What ``voter`` signs to vote ``support`` (0 against, 1 for, 2 abstain) on the proposal (``castVoteBySig``)."""
    contracts = contracts or _active()
    voter = _address(voter, "voter")
    message = {
        "proposalId": int(proposal_id),
        "support": int(support),
        "voter": voter,
        "nonce": governor_nonce(voter, contracts=contracts),
    }
    domain = _domain(GOVERNOR_DOMAIN_NAME, contracts.governor_address, contracts.chain_id)
    fields = [("proposalId", "uint256"), ("support", "uint8"), ("voter", "address"), ("nonce", "uint256")]
    return _typed(domain, "Ballot", fields, message)


def proposal_typed_data(
    proposal_id: int, proposer: str, *, contracts: GovernanceContracts | None = None
) -> dict[str, Any]:
    """What ``proposer`` signs to have the proposal created for them (``proposeBySig``, our Governor's addition)."""
    contracts = contracts or _active()
    proposer = _address(proposer, "proposer")
    message = {
        "proposalId": int(proposal_id),
        "proposer": proposer,
        "nonce": governor_nonce(proposer, contracts=contracts),
    }
    domain = _domain(GOVERNOR_DOMAIN_NAME, contracts.governor_address, contracts.chain_id)
    fields = [("proposalId", "uint256"), ("proposer", "address"), ("nonce", "uint256")]
    return _typed(domain, "Proposal", fields, message)


def permit_typed_data(
    owner: str, spender: str, value: int, *, deadline: int, contracts: GovernanceContracts | None = None
) -> dict[str, Any]:
    """What ``owner`` signs to let ``spender`` take ``value`` tokens (ERC-2612 ``permit``): a deployment stake."""
    contracts = contracts or _active()
    owner = _address(owner, "owner")
    message = {
        "owner": owner,
        "spender": _address(spender, "spender"),
        "value": int(value),
        "nonce": token_nonce(owner, contracts=contracts),
        "deadline": int(deadline),
    }
    domain = _domain(TOKEN_DOMAIN_NAME, contracts.rewards.token_address, contracts.chain_id)
    fields = [
        ("owner", "address"),
        ("spender", "address"),
        ("value", "uint256"),
        ("nonce", "uint256"),
        ("deadline", "uint256"),
    ]
    return _typed(domain, "Permit", fields, message)


def recover_typed(typed_data: dict[str, Any], signature: str) -> str:
    """Who signed ``typed_data`` (EIP-712); GovernanceRefused when the signature is malformed."""
    from eth_account import Account  # 1.3 s and 120 modules a web process pays only when a vote is relayed
    from eth_account.messages import encode_typed_data

    try:
        return Account.recover_message(encode_typed_data(full_message=typed_data), signature=_signature(signature))
    except GovernanceRefused:
        raise
    except Exception as e:  # eth_account raises several types for a bad signature
        raise GovernanceRefused("this signature is malformed: no signer can be recovered from it",
                                code="bad_signature") from e  # fmt: skip


def proposal_id_of(targets: Sequence[str], values: Sequence[int], calldatas: Sequence[str], description: str) -> int:
    """The id the Governor gives this proposal (``getProposalId``: the hash of its actions and description)."""
    encoded = abi_encode(
        ["address[]", "uint256[]", "bytes[]", "bytes32"],
        [
            [to_checksum_address(t) for t in targets],
            [int(v) for v in values],
            [_hexbytes(c) for c in calldatas],
            hashing.keccak256(description.encode()),
        ],
    )
    return int.from_bytes(hashing.keccak256(encoded), "big")


# Relays


def _active() -> GovernanceContracts:
    contracts = GovernanceContracts.objects.current()
    if contracts is None:
        raise GovernanceRefused("governance is not deployed on this chain yet", code="unavailable")
    return contracts


def _address(value: Any, what: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise GovernanceRefused(f"{what} must be an EVM address (0x and 40 hex digits)", code="bad_input")
    return to_checksum_address(value)


def _hexbytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise GovernanceRefused("calldata must be 0x-prefixed hex", code="bad_input")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as e:
        raise GovernanceRefused("calldata must be 0x-prefixed hex", code="bad_input") from e


def _bytes32(value: Any) -> bytes:
    raw = _hexbytes(value)
    if len(raw) != 32:
        raise GovernanceRefused("a hash must be 32 bytes (0x and 64 hex digits)", code="bad_input")
    return raw


def _signature(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 132:
        raise GovernanceRefused("a signature is 65 bytes: 0x and 130 hex digits", code="bad_signature")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as e:
        raise GovernanceRefused("a signature is 65 bytes: 0x and 130 hex digits", code="bad_signature") from e


def _uint(value: Any, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise GovernanceRefused(f"{what} must be a whole number", code="bad_input") from None
    if isinstance(value, bool) or not 0 <= number < _UINT256_LIMIT:
        raise GovernanceRefused(f"{what} must be a whole number from 0 to 2^256-1", code="bad_input")
    return number


def _require_state(state: str, wanted: str, refusal: str, *, code: str, words: dict[str, str],
                   otherwise: str = "it is {state}") -> None:  # fmt: skip
    """Refuses (``code``) unless the proposal is in the ``wanted`` state: ``refusal``, then why, in ``words`` by the
    state it is in (``otherwise`` for the others)."""
    if state != wanted:
        raise GovernanceRefused(refusal + words.get(state, otherwise.format(state=state)), code=code)


def _chain_guard(what: str) -> Any:
    """A context that turns an unreachable chain into a refusal a person understands."""

    class _Guard:
        def __enter__(self) -> None:
            return None

        def __exit__(self, kind: Any, error: Any, tb: Any) -> bool:
            if isinstance(error, chain.ChainUnavailable):
                raise GovernanceRefused(f"the chain cannot be reached right now; try again in a minute ({what})",
                                        code="unavailable") from error  # fmt: skip
            return False

    return _Guard()


def _signature_hash(signature: str) -> str:
    return "0x" + hashing.keccak256(_signature(signature)).hex()


def _refuse_replay(signature: str) -> None:
    if GovernanceTransaction.objects.filter(signature_hash=_signature_hash(signature)).exists():
        raise GovernanceRefused("this signature was already relayed: a signature is good once", code="replayed")


def _check_signature(typed_data: dict[str, Any], signature: str, expected: str) -> None:
    _refuse_replay(signature)
    signer = recover_typed(typed_data, signature)
    if signer != expected:
        raise GovernanceRefused(
            f"this signature was made by {signer}, not {expected}: it may be for another chain, another contract, "
            "or an older nonce (a signature already used)",
            code="bad_signature",
        )


def _create(kind: str, contracts: GovernanceContracts, *, payload: dict[str, Any], proposal_id: int | None = None,
            account: str = "", signature: str = "", requested_by: str = "") -> GovernanceTransaction:  # fmt: skip
    try:
        with transaction.atomic():
            row = GovernanceTransaction.objects.create(
                kind=kind,
                payload=payload,
                proposal_id=str(proposal_id) if proposal_id is not None else "",
                account=account,
                signature_hash=_signature_hash(signature) if signature else "",
                requested_by=requested_by[:64],
            )
    except IntegrityError:
        raise GovernanceRefused("this signature was already relayed: a signature is good once",
                                code="replayed") from None  # fmt: skip
    return send(row_id=row.id) or row


def relay_delegate(*, delegator: str, delegatee: str, expiry: Any, nonce: Any, signature: str,
                   requested_by: str = "") -> GovernanceTransaction:  # fmt: skip
    """Relay a signed delegation (``delegateBySig``): ``delegator``'s votes go to ``delegatee`` (themselves, to
    vote with their own tokens)."""
    contracts = _active()
    delegator, delegatee = _address(delegator, "delegator"), _address(delegatee, "delegatee")
    expiry, nonce = _uint(expiry, "expiry"), _uint(nonce, "nonce")
    _refuse_replay(signature)
    if expiry < int(time.time()):
        raise GovernanceRefused("this delegation signature has expired: sign a new one", code="bad_signature")
    with _chain_guard("delegation"):
        current = token_nonce(delegator, contracts=contracts)
        if nonce != current:
            raise GovernanceRefused(
                f"this signature uses nonce {nonce}, but the account's next nonce is {current}: it was used already "
                "or is out of order",
                code="replayed",
            )
        typed = delegation_typed_data(delegator, delegatee, expiry=expiry, contracts=contracts)
        _check_signature(typed, signature, delegator)
    payload = {"delegatee": delegatee, "nonce": str(nonce), "expiry": str(expiry), "signature": signature}
    return _create(Kind.DELEGATE, contracts, payload=payload, account=delegator, signature=signature,
                   requested_by=requested_by)  # fmt: skip


def relay_vote(*, proposal_id: Any, support: Any, voter: str, signature: str,
               requested_by: str = "") -> GovernanceTransaction:  # fmt: skip
    """Relay a signed vote (``castVoteBySig``) after checking that it would count: voting open, not voted yet, votes
    at the proposal's snapshot block."""
    contracts = _active()
    proposal_id = _uint(proposal_id, "proposal id")
    voter = _address(voter, "voter")
    if support not in (0, 1, 2):
        raise GovernanceRefused("support must be 0 (against), 1 (for) or 2 (abstain)", code="bad_input")
    governor = contracts.governor_address
    with _chain_guard("vote"):
        state = proposal_state(proposal_id, contracts=contracts)
        _require_state(state, "active", "this vote cannot be counted: ", code="not_active", words={
            "pending": "voting has not started yet (it opens at the proposal's snapshot block)",
            "succeeded": "voting is over: the proposal passed",
            "defeated": "voting is over: the proposal was defeated",
        }, otherwise="voting is closed: the proposal is {state}")  # fmt: skip
        if chain.call("OpenLedgerGovernor", governor, "hasVoted", proposal_id, voter):
            raise GovernanceRefused(f"{voter} has already voted on this proposal; a vote cannot be changed",
                                    code="already_voted")  # fmt: skip
        snapshot = int(chain.call("OpenLedgerGovernor", governor, "proposalSnapshot", proposal_id))
        weight = int(chain.call("OpenLedgerGovernor", governor, "getVotes", voter, snapshot))
        if weight == 0:
            raise GovernanceRefused(
                f"{voter} had no votes at the proposal's snapshot (block {snapshot}): votes count only for tokens "
                "delegated before a proposal opens",
                code="no_votes",
            )
        _check_signature(ballot_typed_data(proposal_id, support, voter, contracts=contracts), signature, voter)
    payload = {"support": support, "signature": signature}
    return _create(Kind.VOTE, contracts, payload=payload, proposal_id=proposal_id, account=voter,
                   signature=signature, requested_by=requested_by)  # fmt: skip


def relay_propose(*, targets: Sequence[str], values: Sequence[Any], calldatas: Sequence[str], description: str,
                  proposer: str, signature: str, requested_by: str = "") -> GovernanceTransaction:  # fmt: skip
    """Relay a signed proposal (``proposeBySig``) after checking the proposer's votes against the threshold."""
    contracts = _active()
    proposer = _address(proposer, "proposer")
    if not isinstance(description, str) or not description.strip():
        raise GovernanceRefused("a proposal needs a description", code="bad_input")
    if len(description) > 20_000:
        raise GovernanceRefused("a description is at most 20,000 characters", code="bad_input")
    if not targets or not (len(targets) == len(values) == len(calldatas)) or len(targets) > 10:
        raise GovernanceRefused("a proposal has 1 to 10 actions, each with a target, a value and calldata",
                                code="bad_input")  # fmt: skip
    targets = [_address(t, "target") for t in targets]
    values = [_uint(v, "value") for v in values]
    for c in calldatas:
        _hexbytes(c)
    proposal_id = proposal_id_of(targets, values, calldatas, description)
    governor = contracts.governor_address
    with _chain_guard("proposal"):
        if int(chain.call("OpenLedgerGovernor", governor, "proposalSnapshot", proposal_id)) != 0:
            raise GovernanceRefused("this very proposal exists already (same actions, same description)",
                                    code="exists")  # fmt: skip
        threshold = int(chain.call("OpenLedgerGovernor", governor, "proposalThreshold"))
        latest = chain.block_number()
        votes = int(chain.call("OpenLedgerGovernor", governor, "getVotes", proposer, max(latest - 1, 0)))
        now = int(chain.call("RewardToken", contracts.rewards.token_address, "getVotes", proposer))
        if votes < threshold <= now:
            raise GovernanceRefused(
                f"{proposer}'s votes count from the block after the delegation (block {latest} is the newest); "
                "try again in a few seconds",
                code="below_threshold",
            )
        if votes < threshold:
            raise GovernanceRefused(
                f"{proposer} has {votes} votes (in the token's smallest unit); proposing needs {threshold}: earn "
                "rewards and delegate them to yourself first",
                code="below_threshold",
            )
        _check_signature(proposal_typed_data(proposal_id, proposer, contracts=contracts), signature, proposer)
    payload = {
        "targets": targets,
        "values": [str(v) for v in values],
        "calldatas": list(calldatas),
        "description": description,
        "signature": signature,
    }
    return _create(Kind.PROPOSE, contracts, payload=payload, proposal_id=proposal_id, account=proposer,
                   signature=signature, requested_by=requested_by)  # fmt: skip


def deployment_calldata(manifest_hash: str) -> str:
    """The calldata of the one action of a deployment proposal: ``ModelRegistry.approve(manifestHash)``."""
    contracts = _active()
    fn = chain.contract("ModelRegistry", contracts.registry_address).functions.approve(_bytes32(manifest_hash))
    return fn._encode_transaction_data()


def relay_bond(*, manifest_hash: str, description: str, builder: str, deadline: Any, signature: str,
               requested_by: str = "") -> GovernanceTransaction:  # fmt: skip
    """Relay a deployment proposal's stake: ``builder``'s signed permit for the stake, and ``ModelRegistry.bond``."""
    contracts = _active()
    builder = _address(builder, "builder")
    manifest = _bytes32(manifest_hash)
    deadline = _uint(deadline, "deadline")
    if deadline < int(time.time()):
        raise GovernanceRefused("this permit has expired: sign a new one", code="bad_signature")
    registry = contracts.registry_address
    description_hash = hashing.keccak256(description.encode())
    with _chain_guard("stake"):
        proposal_id = int(chain.call("ModelRegistry", registry, "deploymentProposalId", manifest, description_hash))
        proposer = chain.call("OpenLedgerGovernor", contracts.governor_address, "proposalProposer", proposal_id)
        if int(proposer, 16) == 0:
            raise GovernanceRefused("there is no deployment proposal for this version with this description",
                                    code="not_deployment")  # fmt: skip
        if proposer != builder:
            raise GovernanceRefused(f"only the proposer ({proposer}) bonds this proposal's stake", code="bad_input")
        state = proposal_state(proposal_id, contracts=contracts)
        if state not in ("pending", "active"):
            raise GovernanceRefused(f"a stake is bonded while the proposal is open; it is {state}",
                                    code="not_active")  # fmt: skip
        bond = chain.call("ModelRegistry", registry, "bondOf", proposal_id)
        if bond[3] != 0:
            raise GovernanceRefused("this proposal's stake is bonded already", code="already_bonded")
        stake = int(chain.call("ProtocolParameters", contracts.parameters_address, "deploymentStake"))
        balance = int(chain.call("RewardToken", contracts.rewards.token_address, "balanceOf", builder))
        if balance < stake:
            raise GovernanceRefused(f"the stake is {stake} (smallest unit) and {builder} holds {balance}",
                                    code="below_threshold")  # fmt: skip
        typed = permit_typed_data(builder, registry, stake, deadline=deadline, contracts=contracts)
        _check_signature(typed, signature, builder)
    payload = {
        "manifest_hash": "0x" + manifest.hex(),
        "description_hash": "0x" + description_hash.hex(),
        "deadline": str(deadline),
        "stake": str(stake),
        "signature": signature,
    }
    return _create(Kind.BOND, contracts, payload=payload, proposal_id=proposal_id, account=builder,
                   signature=signature, requested_by=requested_by)  # fmt: skip


def _actions_payload(targets: Sequence[str], values: Sequence[Any], calldatas: Sequence[str],
                     description: str) -> dict[str, Any]:  # fmt: skip
    return {
        "targets": [_address(t, "target") for t in targets],
        "values": [str(_uint(v, "value")) for v in values],
        "calldatas": list(calldatas),
        "description_hash": "0x" + hashing.keccak256(description.encode()).hex(),
    }


def request_queue(*, targets: Sequence[str], values: Sequence[Any], calldatas: Sequence[str], description: str,
                  requested_by: str = "") -> GovernanceTransaction:  # fmt: skip
    """Queue a passed proposal in the timelock (anyone may; the server sends it)."""
    return _request_actions(Kind.QUEUE, targets, values, calldatas, description, requested_by, check=_queueable)


def request_execute(*, targets: Sequence[str], values: Sequence[Any], calldatas: Sequence[str], description: str,
                    requested_by: str = "") -> GovernanceTransaction:  # fmt: skip
    """Execute a queued proposal once the timelock's delay is over (anyone may; the server sends it)."""
    return _request_actions(Kind.EXECUTE, targets, values, calldatas, description, requested_by, check=_executable)


def _request_actions(kind: str, targets: Sequence[str], values: Sequence[Any], calldatas: Sequence[str],
                     description: str, requested_by: str, *,
                     check: Callable[[GovernanceContracts, int, str], None]) -> GovernanceTransaction:  # fmt: skip
    """A queue or an execute of the proposal these actions make: ``check`` refuses it (``GovernanceRefused``) for the
    proposal's state on chain, read with the chain reachable."""
    contracts = _active()
    proposal_id = proposal_id_of(targets, values, calldatas, description)
    with _chain_guard(kind):
        check(contracts, proposal_id, proposal_state(proposal_id, contracts=contracts))
    return _create(kind, contracts, payload=_actions_payload(targets, values, calldatas, description),
                   proposal_id=proposal_id, requested_by=requested_by)  # fmt: skip


def _queueable(contracts: GovernanceContracts, proposal_id: int, state: str) -> None:
    _require_state(state, "succeeded", "only a proposal that passed can be queued; ", code="not_succeeded", words={
        "active": "voting is still open",
        "pending": "voting has not started",
        "defeated": "it was defeated: a defeated proposal is never queued",
        "queued": "it is queued already",
        "executed": "it was executed already",
    })  # fmt: skip


def _executable(contracts: GovernanceContracts, proposal_id: int, state: str) -> None:
    _require_state(state, "queued", "only a queued proposal can be executed; ", code="not_ready", words={
        "succeeded": "it passed but is not queued in the timelock yet",
        "executed": "it was executed already",
        "defeated": "it was defeated",
    })  # fmt: skip
    eta = int(chain.call("OpenLedgerGovernor", contracts.governor_address, "proposalEta", proposal_id))
    now = int(chain.connect().eth.get_block("latest")["timestamp"])
    if now < eta:
        raise GovernanceRefused(
            f"the timelock's delay is not over: it can be executed in {eta - now} s (chain time "
            f"{datetime.fromtimestamp(eta, tz=UTC):%Y-%m-%d %H:%M:%S} UTC)",
            code="not_ready",
        )


def request_settle(*, proposal_id: Any, requested_by: str = "") -> GovernanceTransaction:
    """End a decided deployment proposal's stake: returned (passed, cancelled) or part forfeited (defeated)."""
    contracts = _active()
    proposal_id = _uint(proposal_id, "proposal id")
    with _chain_guard("settle"):
        bond = chain.call("ModelRegistry", contracts.registry_address, "bondOf", proposal_id)
        if bond[3] != 1:
            raise GovernanceRefused("this proposal has no stake waiting to be settled", code="not_decided")
        state = proposal_state(proposal_id, contracts=contracts)
    if state in ("pending", "active"):
        raise GovernanceRefused(f"the stake is settled once voting is over; the proposal is {state}",
                                code="not_decided")  # fmt: skip
    return _create(Kind.SETTLE, contracts, payload={}, proposal_id=proposal_id, requested_by=requested_by)


# The outbox kind


def _split_signature(signature: str) -> tuple[int, bytes, bytes]:
    raw = _signature(signature)
    v = raw[64]
    return (v + 27 if v < 27 else v), raw[:32], raw[32:64]


# Gas is estimated at the latest block, but a vote or delegation mined in a later block may write new vote
# checkpoints where the estimate updated one in place (about 45k more): a fixed allowance on top of GAS_MARGIN keeps a
# signed delegation sent right after another from running out of gas (measured: 85.5k estimated, 102.6k short).
GAS_ALLOWANCE = 60_000


def _build(row: GovernanceTransaction, contracts: GovernanceContracts) -> dict[str, Any]:
    tx = _build_call(row, contracts)
    tx["gas"] = int(tx["gas"]) + GAS_ALLOWANCE
    return tx


def _build_call(row: GovernanceTransaction, contracts: GovernanceContracts) -> dict[str, Any]:
    p = row.payload
    cid = contracts.chain_id
    governor = contracts.governor_address
    if row.contracts_id is not None and row.contracts_id != contracts.id:
        raise chain.ContractReverted("the signature was made for governance contracts that are gone (chain reset)")
    if row.kind == Kind.DELEGATE:
        v, r, s = _split_signature(p["signature"])
        return chain.transaction("RewardToken", contracts.rewards.token_address, "delegateBySig", p["delegatee"],
                                 int(p["nonce"]), int(p["expiry"]), v, r, s, chain_id=cid)  # fmt: skip
    if row.kind == Kind.VOTE:
        return chain.transaction("OpenLedgerGovernor", governor, "castVoteBySig", int(row.proposal_id),
                                 int(p["support"]), row.account, _signature(p["signature"]), chain_id=cid)  # fmt: skip
    if row.kind == Kind.PROPOSE:
        return chain.transaction(
            "OpenLedgerGovernor", governor, "proposeBySig", p["targets"], [int(v) for v in p["values"]],
            [_hexbytes(c) for c in p["calldatas"]], p["description"], row.account, _signature(p["signature"]),
            chain_id=cid,
        )  # fmt: skip
    if row.kind == Kind.BOND:
        v, r, s = _split_signature(p["signature"])
        return chain.transaction("ModelRegistry", contracts.registry_address, "bond", _bytes32(p["manifest_hash"]),
                                 _bytes32(p["description_hash"]), row.account, int(p["deadline"]), v, r, s,
                                 chain_id=cid)  # fmt: skip
    if row.kind in (Kind.QUEUE, Kind.EXECUTE):
        return chain.transaction("OpenLedgerGovernor", governor, row.kind, p["targets"],
                                 [int(v) for v in p["values"]], [_hexbytes(c) for c in p["calldatas"]],
                                 _bytes32(p["description_hash"]), chain_id=cid)  # fmt: skip
    if row.kind == Kind.SETTLE:
        return chain.transaction("ModelRegistry", contracts.registry_address, "settle", int(row.proposal_id),
                                 chain_id=cid)  # fmt: skip
    raise chain.ContractReverted(f"unknown governance transaction kind {row.kind}")


_EVENTS = {
    Kind.DELEGATE: ("RewardToken", ("DelegateChanged",)),
    Kind.VOTE: ("OpenLedgerGovernor", ("VoteCast",)),
    Kind.PROPOSE: ("OpenLedgerGovernor", ("ProposalCreated",)),
    Kind.BOND: ("ModelRegistry", ("StakeBonded",)),
    Kind.QUEUE: ("OpenLedgerGovernor", ("ProposalQueued",)),
    Kind.EXECUTE: ("OpenLedgerGovernor", ("ProposalExecuted",)),
    Kind.SETTLE: ("ModelRegistry", ("StakeReturned", "StakeSlashed")),
}


def _has_event(row: GovernanceTransaction, receipt: chain.Receipt) -> bool:
    contracts = row.contracts
    name, wanted = _EVENTS[GovernanceTransaction.Kind(row.kind)]
    for event in chain.decode_logs(receipt.logs, contracts={name: contracts.addresses[name]}):
        if event.name not in wanted:
            continue
        if row.kind == Kind.DELEGATE:
            if event.args["delegator"] == row.account:
                return True
        elif row.kind == Kind.VOTE:
            if event.args["voter"] == row.account and str(event.args["proposalId"]) == row.proposal_id:
                return True
        elif str(event.args["proposalId"]) == row.proposal_id:
            return True
    return False


def _governor(contracts: GovernanceContracts) -> str:
    return contracts.governor_address


def _nonce_deployment(contracts: GovernanceContracts) -> Any:
    return contracts.rewards.deployment


def _after_reset(spec: transactions.Spec, *, old: GovernanceContracts, new: GovernanceContracts,
                 reason: str) -> int:  # fmt: skip
    """A signature names its contract (EIP-712 domain): what was meant for the old contracts cannot go to the new
    ones. Rows not confirmed there fail; confirmed ones stay as history of the old chain."""
    failed = GovernanceTransaction.objects.filter(status__in=[Status.PENDING, Status.SUBMITTED]).update(
        status=Status.FAILED, last_error=f"chain reset ({reason}): sign again for the new contracts"
    )
    if failed:
        logger.warning("governance contracts reset: %s relayed transaction(s) failed", failed)
    return failed


GOVERNANCE = transactions.register(
    transactions.Spec(
        name="governance",
        model=GovernanceTransaction,
        target_field="contracts",
        ensure_target=deployments.ensure_governance_deployed,
        build=_build,
        has_event=_has_event,
        event="governance",
        contract_address=_governor,
        send_task="ledger.tasks.governance_send_task",
        nonce_deployment=_nonce_deployment,
        related=("contracts__rewards",),
        on_reset=_after_reset,
    )
)


def send(*, row_id: int, now: datetime | None = None) -> GovernanceTransaction | None:
    """Send one governance transaction if it is due. A refusal by the contract fails it at once, with the reason."""
    return transactions.send(GOVERNANCE, row_id, now=now)


def confirm(*, row: GovernanceTransaction, wait_seconds: float = 0.0) -> GovernanceTransaction:
    """Check a submitted row's receipt for up to ``wait_seconds`` (``transactions.confirm_waiting``)."""
    return transactions.confirm_waiting(GOVERNANCE, row.id, wait_seconds=wait_seconds, poll_seconds=0.2)


def governance_dispatch(*, now: datetime | None = None) -> dict[str, int]:
    """The beat's sweep over governance transactions: send what is due, rebroadcast what the node lost."""
    if not GovernanceTransaction.objects.exclude(status__in=[Status.CONFIRMED, Status.FAILED]).exists():
        return {"sent": 0, "checked": 0}
    return transactions.dispatch([GOVERNANCE], now=now)


def governance_confirm() -> dict[str, int]:
    """The beat's confirmation pass over submitted governance transactions."""
    return transactions.confirm([GOVERNANCE])

"""Everything said to the EVM chain goes through here: the only module that imports web3.

web3 and eth-account are imported inside the functions, so that importing this module (from a view, a service, the
health check) costs nothing and works without a chain. Every RPC failure leaves as :class:`ChainUnavailable` (the
endpoint is down or slow: retry later) or another :class:`ChainError` (it answered no), never as a web3 or requests
exception, so callers need not know those libraries.

A client and nothing more: it reads and writes no rows (deployment rows, their locks and resets live in
``ledger.deployments``; the outbox's states in ``ledger.transactions``). The one exception is a read: the helpers
that take an optional ``deployment``/``contracts`` use the active row for EVM_CHAIN_ID when given none.

No code path assumes anvil: the anvil development key is only a default on chain id 31337.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import requests
from django.conf import settings
from eth_utils import keccak

from . import hashing
from .models import ChainDeployment, RewardContracts

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3
    from web3.contract import Contract

logger = logging.getLogger(__name__)

ARTIFACT_PATH = Path(__file__).resolve().parent / "contracts" / "build" / "LineageRegistry.json"
ANVIL_CHAIN_ID = 31337
RPC_TIMEOUT_SECONDS = 10.0
HEALTH_TIMEOUT_SECONDS = 2.0
GAS_MARGIN = 1.2
ALREADY_KNOWN = ("already known", "already imported", "known transaction", "alreadyknown")
REWARD_CONTRACTS = ("RewardToken", "RewardDistributor")
GOVERNANCE_CONTRACTS = ("OpenLedgerTimelock", "OpenLedgerGovernor", "ProtocolParameters", "ModelRegistry")
MAX_UINT256 = 2**256 - 1
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


class ChainError(Exception):
    """The chain answered, but not as needed: a revert, a rejected transaction, the wrong chain."""


class ChainUnavailable(ChainError):
    """The RPC endpoint could not be reached or did not answer in time: worth retrying later."""


class ContractReverted(ChainError):
    """The contract refused the call (e.g. the signer is not an authorised anchorer): retrying will not help."""


@dataclass(frozen=True)
class SignedTransaction:
    raw: str
    hash: str
    nonce: int


@dataclass(frozen=True)
class AnchoredEvent:
    kind: int
    subject_id: str
    root: str
    uri: str
    submitter: str
    contract_address: str
    tx_hash: str
    block_number: int
    log_index: int


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    status: int
    block_number: int
    block_hash: str
    logs: tuple[Any, ...]
    gas_used: int = 0
    contract_address: str | None = None


@dataclass(frozen=True)
class RootInfo:
    kind: int
    subject_id: str
    block_number: int
    submitter: str


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def _bytes32(value: str | bytes) -> bytes:
    raw = bytes.fromhex(value[2:] if value[:2] in ("0x", "0X") else value) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw


def redacted_rpc_url(url: str) -> str:
    """Scheme, host and port only: hosted RPC URLs carry API keys in the path or the user info."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    return f"{parsed.scheme}://{host}" + (f":{parsed.port}" if parsed.port else "")


@contextmanager
def _rpc(what: str) -> Iterator[None]:
    from web3.exceptions import (
        ContractLogicError,
        ProviderConnectionError,
        RequestTimedOut,
        TimeExhausted,
        TooManyRequests,
        Web3Exception,
    )

    try:
        yield
    except ContractLogicError as e:
        raise ContractReverted(f"{what}: reverted: {_revert_reason(e)}") from e
    except (
        requests.RequestException,
        OSError,
        ProviderConnectionError,
        RequestTimedOut,
        TimeExhausted,
        TooManyRequests,
    ) as e:
        raise ChainUnavailable(f"{what}: {type(e).__name__}: {e}") from e
    except (Web3Exception, ValueError) as e:
        raise ChainError(f"{what}: {type(e).__name__}: {e}") from e


def _revert_reason(error: Exception) -> str:
    """The custom error's name when it is one of ours or OpenZeppelin's, else what web3 said."""
    data = getattr(error, "data", None)
    if isinstance(data, str) and len(data) >= 10:
        abis = [
            load_artifact()["abi"],
            *(load_contract_artifact(name)["abi"] for name in (*REWARD_CONTRACTS, *GOVERNANCE_CONTRACTS)),
        ]
        for item in (item for abi in abis for item in abi):
            if item["type"] == "error":
                signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                if data[2:10] == keccak(text=signature)[:4].hex():
                    return f"{item['name']} ({data})"
    return getattr(error, "message", None) or str(error)


@cache
def _client(url: str, timeout: float) -> Web3:
    from web3 import Web3

    # no retries inside web3: the outbox has its own backoff, and the health check must fail fast
    provider = Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
    return Web3(provider)


def connect(*, timeout: float = RPC_TIMEOUT_SECONDS) -> Web3:
    """A web3 client for EVM_RPC_URL (cached per URL and timeout; it opens no connection until used)."""
    return _client(settings.EVM_RPC_URL, timeout)


def chain_id(*, w3: Web3 | None = None) -> int:
    """The node's chain id, checked against EVM_CHAIN_ID: signing for one chain and sending to another never works."""
    with _rpc("eth_chainId"):
        actual = (w3 or connect()).eth.chain_id
    if actual != settings.EVM_CHAIN_ID:
        raise ChainError(
            f"the node at {redacted_rpc_url(settings.EVM_RPC_URL)} is chain {actual}, "
            f"but EVM_CHAIN_ID is {settings.EVM_CHAIN_ID}"
        )
    return actual


@cache
def _account(key: str, keystore_file: str, keystore_password: str, configured_chain_id: int) -> LocalAccount:
    from eth_account import Account

    if key:
        return Account.from_key(key)
    if keystore_file:
        encrypted = json.loads(Path(keystore_file).read_text())
        return Account.from_key(Account.decrypt(encrypted, keystore_password))
    if configured_chain_id == ANVIL_CHAIN_ID:
        return Account.from_key(settings.ANVIL_DEFAULT_KEY)
    raise ChainError(
        f"no signer for chain {configured_chain_id}: set EVM_SIGNER_KEY, or EVM_KEYSTORE_FILE and EVM_KEYSTORE_PASSWORD"
    )


def signer() -> LocalAccount:
    """The account that deploys and anchors: EVM_SIGNER_KEY, else the keystore file, else (anvil only) its dev key."""
    return _account(
        settings.EVM_SIGNER_KEY, settings.EVM_KEYSTORE_FILE, settings.EVM_KEYSTORE_PASSWORD, settings.EVM_CHAIN_ID
    )


@cache
def load_artifact() -> dict[str, Any]:
    """The committed compiler output: abi, bytecode, compiler settings (see contracts/compile.js)."""
    return json.loads(ARTIFACT_PATH.read_text())


def artifact_sha256() -> str:
    return hashlib.sha256(bytes.fromhex(load_artifact()["bytecode"][2:])).hexdigest()


def _contract(w3: Web3, address: str) -> Contract:
    return w3.eth.contract(address=w3.to_checksum_address(address), abi=load_artifact()["abi"])


def has_code(address: str) -> bool:
    """True when a contract's code is at ``address`` (eth_getCode)."""
    w3 = connect()
    with _rpc("eth_getCode"):
        return bool(w3.eth.get_code(w3.to_checksum_address(address)))


def creation_transaction(name: str, *args: Any, chain_id: int) -> dict[str, Any]:
    """An unsigned transaction deploying our contract ``name`` (its committed artifact) with constructor ``args``:
    gas estimated with a margin, fees priced, no nonce."""
    artifact = load_artifact() if name == "LineageRegistry" else load_contract_artifact(name)
    w3 = connect()
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    with _rpc(f"prepare {name} deployment"):
        tx = factory.constructor(*args).build_transaction({"from": signer().address, "chainId": chain_id})
    tx["gas"] = int(tx["gas"] * GAS_MARGIN)
    return tx


def send_and_wait(tx: dict[str, Any], *, nonce: int, what: str) -> Receipt:
    """Sign ``tx`` with ``nonce``, send it and wait (up to CHAIN_TX_TIMEOUT_SECONDS) for a successful receipt.

    For deployments only, which nothing else waits on: the outbox never waits, it stores the signed bytes first.
    Raises ChainError when the transaction reverted.
    """
    w3 = connect()
    signed = sign(tx, nonce=nonce)
    with _rpc(what):
        w3.eth.send_raw_transaction(bytes.fromhex(signed.raw[2:]))
        w3.eth.wait_for_transaction_receipt(signed.hash, timeout=settings.CHAIN_TX_TIMEOUT_SECONDS, poll_latency=0.1)
    receipt = get_receipt(signed.hash)
    if receipt is None or receipt.status != 1:
        raise ChainError(f"{what} failed in transaction {signed.hash}")
    return receipt


def account_nonce(address: str, *, block: str = "pending") -> int:
    """eth_getTransactionCount: ``pending`` counts what the node holds in its mempool, ``latest`` what is mined."""
    w3 = connect()
    with _rpc("eth_getTransactionCount"):
        return w3.eth.get_transaction_count(w3.to_checksum_address(address), block)


def anchor_transaction(
    deployment: ChainDeployment, *, kind: int, subject_id: str, root: str, uri: str
) -> dict[str, Any]:
    """An unsigned ``anchor(...)`` transaction without its nonce: gas estimated (with a margin) and fees priced.

    Raises ContractReverted when the contract would refuse it (a signer that may not anchor, a zero root).
    """
    w3 = connect()
    account = signer()
    call = _contract(w3, deployment.contract_address).functions.anchor(kind, _bytes32(subject_id), _bytes32(root), uri)
    with _rpc("prepare anchor transaction"):
        tx = call.build_transaction({"from": account.address, "chainId": deployment.chain_id})
    tx["gas"] = int(tx["gas"] * GAS_MARGIN)
    return tx


def sign(tx: dict[str, Any], *, nonce: int) -> SignedTransaction:
    """Sign ``tx`` with ``nonce`` locally (no RPC): the raw bytes are stored before they are ever broadcast."""
    signed = signer().sign_transaction({**tx, "nonce": nonce})
    return SignedTransaction(raw=_hex(signed.raw_transaction), hash=_hex(signed.hash), nonce=nonce)


def broadcast(raw_tx: str) -> str:
    """Send a signed transaction; a node that already holds it counts as success. Returns the transaction hash."""
    w3 = connect()
    raw = bytes.fromhex(raw_tx[2:])
    try:
        with _rpc("eth_sendRawTransaction"):
            w3.eth.send_raw_transaction(raw)
    except ChainUnavailable:
        raise
    except ChainError as e:
        # the node holds it already (from an earlier try): that is the outcome we wanted
        if not any(phrase in str(e).lower() for phrase in ALREADY_KNOWN):
            raise
    return hashing.keccak_hex(raw)


def transaction_known(tx_hash: str) -> bool:
    """True when the node knows the transaction, mined or waiting in its mempool."""
    from web3.exceptions import TransactionNotFound

    w3 = connect()
    try:
        with _rpc("eth_getTransactionByHash"):
            w3.eth.get_transaction(tx_hash)
    except ChainError as e:
        if isinstance(e.__cause__, TransactionNotFound):
            return False
        raise
    return True


def get_receipt(tx_hash: str) -> Receipt | None:
    """The mined transaction's receipt, or None while it is not mined (or unknown)."""
    from web3.exceptions import TransactionNotFound

    w3 = connect()
    try:
        with _rpc("eth_getTransactionReceipt"):
            receipt = w3.eth.get_transaction_receipt(tx_hash)
    except ChainError as e:
        if isinstance(e.__cause__, TransactionNotFound):
            return None
        raise
    if receipt is None or receipt.get("blockNumber") is None:
        return None
    return Receipt(
        tx_hash=_hex(receipt["transactionHash"]),
        status=receipt["status"],
        block_number=receipt["blockNumber"],
        block_hash=_hex(receipt["blockHash"]),
        logs=tuple(receipt["logs"]),
        gas_used=int(receipt.get("gasUsed", 0)),
        contract_address=receipt.get("contractAddress"),
    )


def decode_anchored(receipt: Receipt, *, contract_address: str) -> list[AnchoredEvent]:
    """Our Anchored events in ``receipt``, emitted by the contract at ``contract_address`` and nothing else.

    A transaction to an address without code succeeds with no logs (anvil redeploys at the same address after a
    reset), so an anchor is confirmed by this event, never by the receipt's status alone.
    """
    from web3.exceptions import MismatchedABI

    w3 = connect()
    anchored = _contract(w3, contract_address).events.Anchored()
    wanted = contract_address.lower()
    events = []
    for log in receipt.logs:
        if log["address"].lower() != wanted:
            continue
        try:
            data = anchored.process_log(log)
        except MismatchedABI:
            continue  # another event of ours (AnchorerSet, OwnershipTransferred)
        args = data["args"]
        events.append(
            AnchoredEvent(
                kind=args["kind"],
                subject_id=_hex(args["subjectId"]),
                root=_hex(args["root"]),
                uri=args["uri"],
                submitter=args["submitter"],
                contract_address=log["address"],
                tx_hash=receipt.tx_hash,
                block_number=receipt.block_number,
                log_index=log["logIndex"],
            )
        )
    return events


def block_number() -> int:
    w3 = connect()
    with _rpc("eth_blockNumber"):
        return w3.eth.block_number


def block_hash(number: int) -> str | None:
    """The hash of block ``number`` on the chain as it is now, or None when the chain is shorter."""
    from web3.exceptions import BlockNotFound

    w3 = connect()
    try:
        with _rpc("eth_getBlockByNumber"):
            return _hex(w3.eth.get_block(number)["hash"])
    except ChainError as e:
        if isinstance(e.__cause__, BlockNotFound):
            return None
        raise


def _deployment_or_active(deployment: ChainDeployment | None) -> ChainDeployment:
    deployment = deployment or ChainDeployment.objects.current()
    if deployment is None:
        raise ChainError("LineageRegistry is not deployed on this chain: run manage.py chain_deploy")
    return deployment


def verify_on_chain(
    root: str | bytes, leaf: str | bytes, proof: Sequence[str | bytes], *, deployment: ChainDeployment | None = None
) -> bool:
    """``LineageRegistry.verify`` by eth_call: true when ``root`` is anchored and ``proof`` leads ``leaf`` to it."""
    deployment = _deployment_or_active(deployment)
    w3 = connect()
    call = _contract(w3, deployment.contract_address).functions.verify(
        _bytes32(root), _bytes32(leaf), [_bytes32(p) for p in proof]
    )
    with _rpc("LineageRegistry.verify"):
        return bool(call.call())


def root_info(root: str | bytes, *, deployment: ChainDeployment | None = None) -> RootInfo | None:
    """How ``root`` was first anchored on the deployment's contract, or None when it never was."""
    deployment = _deployment_or_active(deployment)
    w3 = connect()
    with _rpc("LineageRegistry.rootInfo"):
        kind, subject_id, number, submitter = (
            _contract(w3, deployment.contract_address).functions.rootInfo(_bytes32(root)).call()
        )
    if number == 0:
        return None
    return RootInfo(kind=kind, subject_id=_hex(subject_id), block_number=number, submitter=submitter)


def chain_status() -> dict[str, Any]:
    """The chain's state for /healthz: never raises, and answers within about two seconds when the node is down."""
    status: dict[str, Any] = {
        "ok": False,
        "rpc_url": redacted_rpc_url(settings.EVM_RPC_URL),
        "chain_id": None,
        "latest_block": None,
        "contract_address": None,
    }
    try:
        w3 = connect(timeout=HEALTH_TIMEOUT_SECONDS)
        with _rpc("eth_chainId"):
            status["chain_id"] = w3.eth.chain_id
        with _rpc("eth_blockNumber"):
            status["latest_block"] = w3.eth.block_number
        if status["chain_id"] != settings.EVM_CHAIN_ID:
            status["error"] = f"the node is chain {status['chain_id']}, but EVM_CHAIN_ID is {settings.EVM_CHAIN_ID}"
            return status
        deployment = ChainDeployment.objects.current()
        if deployment is None:
            status["error"] = "LineageRegistry is not deployed: run manage.py chain_deploy"
            return status
        status["contract_address"] = deployment.contract_address
        with _rpc("eth_getCode"):
            code = w3.eth.get_code(w3.to_checksum_address(deployment.contract_address))
        if not code:
            status["error"] = "no contract code at the deployed address: the chain was reset (it is redeployed soon)"
            return status
        status["ok"] = True
    except Exception as e:  # a health check reports failures; it never raises them
        status["error"] = str(e) if isinstance(e, ChainError) else f"{type(e).__name__}: {e}"
    return status


# Rewards: RewardToken and RewardDistributor, deployed next to LineageRegistry by the same signer.


@dataclass(frozen=True)
class EpochPublishedEvent:
    epoch: int
    root: str
    total: int
    tx_hash: str
    block_number: int


@dataclass(frozen=True)
class ClaimedEvent:
    epoch: int
    index: int
    account: str
    amount: int
    tx_hash: str
    block_number: int


@dataclass(frozen=True)
class EpochInfo:
    root: str
    total: int
    claimed: int
    published_block: int


@cache
def load_contract_artifact(name: str) -> dict[str, Any]:
    """The committed compiler output of one of our contracts (``RewardToken``, ``RewardDistributor``, ...)."""
    return json.loads((ARTIFACT_PATH.parent / f"{name}.json").read_text())


def contract_artifact_sha256(name: str) -> str:
    return hashlib.sha256(bytes.fromhex(load_contract_artifact(name)["bytecode"][2:])).hexdigest()


def _reward_contract(w3: Web3, name: str, address: str) -> Contract:
    return w3.eth.contract(address=w3.to_checksum_address(address), abi=load_contract_artifact(name)["abi"])


def _signer_transaction(call: Any, chain_id: int, what: str) -> dict[str, Any]:
    with _rpc(what):
        tx = call.build_transaction({"from": signer().address, "chainId": chain_id})
    tx["gas"] = int(tx["gas"] * GAS_MARGIN)
    return tx


def publish_epoch_transaction(contracts: RewardContracts, *, epoch: int, root: str, total: int) -> dict[str, Any]:
    """An unsigned ``publishEpoch`` transaction (gas estimated, fees priced, no nonce). Raises ContractReverted when
    the distributor would refuse it: the epoch is published already."""
    call = _reward_contract(connect(), "RewardDistributor", contracts.distributor_address).functions.publishEpoch(
        epoch, _bytes32(root), total
    )
    return _signer_transaction(call, contracts.chain_id, "prepare publishEpoch transaction")


def claim_transaction(
    contracts: RewardContracts, *, epoch: int, index: int, account: str, amount: int, proof: Sequence[str]
) -> dict[str, Any]:
    """An unsigned ``claim`` transaction; raises ContractReverted (UnknownEpoch, AlreadyClaimed, InvalidProof) when
    the distributor would refuse it."""
    w3 = connect()
    call = _reward_contract(w3, "RewardDistributor", contracts.distributor_address).functions.claim(
        epoch, index, w3.to_checksum_address(account), amount, [_bytes32(p) for p in proof]
    )
    return _signer_transaction(call, contracts.chain_id, "prepare claim transaction")


def decode_reward_events(receipt: Receipt, *, contracts: RewardContracts) -> list[EpochPublishedEvent | ClaimedEvent]:
    """The distributor's EpochPublished and Claimed events in ``receipt`` (from its address and nothing else)."""
    from web3.exceptions import MismatchedABI

    contract = _reward_contract(connect(), "RewardDistributor", contracts.distributor_address)
    wanted = contracts.distributor_address.lower()
    events: list[EpochPublishedEvent | ClaimedEvent] = []
    for log in receipt.logs:
        if log["address"].lower() != wanted:
            continue
        for event in (contract.events.EpochPublished(), contract.events.Claimed()):
            try:
                args = event.process_log(log)["args"]
            except MismatchedABI:
                continue
            if "root" in args:
                events.append(
                    EpochPublishedEvent(
                        epoch=args["epoch"],
                        root=_hex(args["root"]),
                        total=args["total"],
                        tx_hash=receipt.tx_hash,
                        block_number=receipt.block_number,
                    )
                )
            else:
                events.append(
                    ClaimedEvent(
                        epoch=args["epoch"],
                        index=args["index"],
                        account=args["account"],
                        amount=args["amount"],
                        tx_hash=receipt.tx_hash,
                        block_number=receipt.block_number,
                    )
                )
            break
    return events


def _rewards_or_active(contracts: RewardContracts | None) -> RewardContracts:
    contracts = contracts or RewardContracts.objects.current()
    if contracts is None:
        raise ChainError("the reward contracts are not deployed on this chain: run manage.py chain_deploy")
    return contracts


def epoch_info(epoch: int, *, contracts: RewardContracts | None = None) -> EpochInfo | None:
    """``RewardDistributor.epochInfo``: the published epoch, or None when it was never published there."""
    contracts = _rewards_or_active(contracts)
    contract = _reward_contract(connect(), "RewardDistributor", contracts.distributor_address)
    with _rpc("RewardDistributor.epochInfo"):
        root, total, claimed, published = contract.functions.epochInfo(epoch).call()
    if published == 0:
        return None
    return EpochInfo(root=_hex(root), total=total, claimed=claimed, published_block=published)


def is_claimed(epoch: int, index: int, *, contracts: RewardContracts | None = None) -> bool:
    contracts = _rewards_or_active(contracts)
    contract = _reward_contract(connect(), "RewardDistributor", contracts.distributor_address)
    with _rpc("RewardDistributor.isClaimed"):
        return bool(contract.functions.isClaimed(epoch, index).call())


def token_balance(address: str, *, contracts: RewardContracts | None = None) -> int:
    """The RewardToken balance of ``address``, in the smallest unit."""
    contracts = _rewards_or_active(contracts)
    w3 = connect()
    contract = _reward_contract(w3, "RewardToken", contracts.token_address)
    with _rpc("RewardToken.balanceOf"):
        return int(contract.functions.balanceOf(w3.to_checksum_address(address)).call())


def reward_token_of(distributor_address: str) -> str:
    """The RewardToken the distributor at ``distributor_address`` created (and alone mints)."""
    return str(call("RewardDistributor", distributor_address, "token"))


# Any of our contracts by name: reads, transactions from the signer, and events (the governance contracts use these).


@dataclass(frozen=True)
class Event:
    """One decoded log of one of our contracts: ``args`` as web3 decodes them (bytes stay bytes, ints ints)."""

    name: str
    args: dict[str, Any]
    address: str
    tx_hash: str
    block_number: int
    block_hash: str
    log_index: int


def contract(name: str, address: str) -> Contract:
    """Our contract ``name`` (its committed ABI) at ``address``."""
    return _reward_contract(connect(), name, address)


def call(name: str, address: str, function: str, *args: Any, block: int | str = "latest") -> Any:
    """``name.function(*args)`` by eth_call at ``block``; raises ContractReverted with the custom error's name."""
    fn = getattr(contract(name, address).functions, function)(*args)
    with _rpc(f"{name}.{function}"):
        return fn.call(block_identifier=block)


def transaction(name: str, address: str, function: str, *args: Any, chain_id: int) -> dict[str, Any]:
    """An unsigned ``name.function(*args)`` transaction from the signer: gas estimated (with a margin), no nonce.
    Raises ContractReverted (with the custom error's name) when the contract would refuse it."""
    fn = getattr(contract(name, address).functions, function)(*args)
    return _signer_transaction(fn, chain_id, f"prepare {name}.{function}")


def _event_abis(name: str) -> dict[bytes, dict[str, Any]]:
    abis = {}
    for item in load_contract_artifact(name)["abi"]:
        if item["type"] == "event":
            signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            abis[keccak(text=signature)] = item
    return abis


def decode_logs(logs: Sequence[Any], *, contracts: dict[str, str]) -> list[Event]:
    """The events in ``logs`` emitted by our ``contracts`` (name -> address) and no other address, in log order."""
    from web3._utils.events import get_event_data

    w3 = connect()
    by_address = {address.lower(): name for name, address in contracts.items()}
    events = []
    for log in logs:
        name = by_address.get(str(log["address"]).lower())
        if name is None or not log["topics"]:
            continue
        abi = _event_abis(name).get(bytes(log["topics"][0]))
        if abi is None:
            continue
        data = get_event_data(w3.codec, abi, log)
        events.append(
            Event(
                name=data["event"],
                args=dict(data["args"]),
                address=str(log["address"]),
                tx_hash=_hex(log["transactionHash"]),
                block_number=int(log["blockNumber"]),
                block_hash=_hex(log["blockHash"]),
                log_index=int(log["logIndex"]),
            )
        )
    return events


def get_logs(contracts: dict[str, str], *, from_block: int, to_block: int) -> list[Event]:
    """Every event of ``contracts`` (name -> address) in blocks ``from_block``..``to_block`` (eth_getLogs)."""
    w3 = connect()
    with _rpc("eth_getLogs"):
        logs = w3.eth.get_logs(
            {
                "address": [w3.to_checksum_address(a) for a in contracts.values()],
                "fromBlock": from_block,
                "toBlock": to_block,
            }
        )
    return decode_logs(logs, contracts=contracts)


def block_time(number: int) -> int:
    """The timestamp (Unix seconds, chain time) of block ``number``."""
    w3 = connect()
    with _rpc("eth_getBlockByNumber"):
        return int(w3.eth.get_block(number)["timestamp"])

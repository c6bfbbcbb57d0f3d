#!/usr/bin/env node
// node verify/governance.js --rpc URL --governor ADDRESS --proposal ID [--from-block N] [--json]
// (or: npm run verify:governance -- ...)
//
// What a governance proposal did, from chain data alone, with ethers and nothing of the site's code: the actions the
// proposal id commits to (from ProposalCreated, checked against the id), decoded; every vote (VoteCast) summed and
// checked against the Governor's tally; the quorum and the state; the timelock's scheduled and executed calls
// (CallScheduled/CallExecuted, checked against the actions); and what the execution changed (ParameterSet,
// ModelApproved, ApprovalWithdrawn, and a deployment proposal's stake: StakeBonded, StakeReturned, StakeSlashed).
// Exit 0: everything read agrees; 1: something does not (the report says what); 2: bad usage, an unknown proposal, or
// the RPC could not be reached. See docs/governance.md ("Verifying a proposal from chain data alone").
import { parseArgs } from "node:util";

import { ethers } from "ethers";

import { Chain, rpc } from "./lib/chain.js";
import { runCli } from "./lib/cli.js";
import { NetworkError, UsageError } from "./lib/http.js";

const USAGE = `usage: node verify/governance.js --rpc URL --governor ADDRESS --proposal ID [--from-block N] [--json]
  --rpc URL          an Ethereum JSON-RPC endpoint of the chain the Governor lives on
  --governor ADDRESS the OpenZeppelin Governor (its timelock, token and the targets are read from the chain)
  --proposal ID      the proposal id, decimal or 0x-hex
  --from-block N     where to look for the proposal's events when they are not where its snapshot says (default 0)
  --json             print one JSON object instead of the report`;

// The public interfaces this reads: OpenZeppelin 5's Governor and TimelockController, and the two contracts the
// timelock owns. Written out here, not read from the site, so that the verifier trusts nothing but the chain.
const GOVERNOR_ABI = [
  "function name() view returns (string)",
  "function state(uint256 proposalId) view returns (uint8)",
  "function proposalSnapshot(uint256 proposalId) view returns (uint256)",
  "function proposalDeadline(uint256 proposalId) view returns (uint256)",
  "function proposalProposer(uint256 proposalId) view returns (address)",
  "function proposalEta(uint256 proposalId) view returns (uint256)",
  "function proposalVotes(uint256 proposalId) view returns (uint256 againstVotes, uint256 forVotes, uint256 abstainVotes)",
  "function quorum(uint256 timepoint) view returns (uint256)",
  "function votingDelay() view returns (uint256)",
  "function timelock() view returns (address)",
  "function token() view returns (address)",
  "event ProposalCreated(uint256 proposalId, address proposer, address[] targets, uint256[] values, string[] signatures, bytes[] calldatas, uint256 voteStart, uint256 voteEnd, string description)",
  "event ProposalQueued(uint256 proposalId, uint256 etaSeconds)",
  "event ProposalExecuted(uint256 proposalId)",
  "event ProposalCanceled(uint256 proposalId)",
  "event VoteCast(address indexed voter, uint256 proposalId, uint8 support, uint256 weight, string reason)",
  "event VoteCastWithParams(address indexed voter, uint256 proposalId, uint8 support, uint256 weight, string reason, bytes params)",
  // settings a proposal may change (GovernorSettings, GovernorVotesQuorumFraction, GovernorTimelockControl)
  "function setVotingDelay(uint48 newVotingDelay)",
  "function setVotingPeriod(uint32 newVotingPeriod)",
  "function setProposalThreshold(uint256 newProposalThreshold)",
  "function updateQuorumNumerator(uint256 newQuorumNumerator)",
  "function updateTimelock(address newTimelock)",
];
const TIMELOCK_ABI = [
  "function hashOperationBatch(address[] targets, uint256[] values, bytes[] payloads, bytes32 predecessor, bytes32 salt) pure returns (bytes32)",
  "function isOperationDone(bytes32 id) view returns (bool)",
  "function getMinDelay() view returns (uint256)",
  "function updateDelay(uint256 newDelay)",
  "event CallScheduled(bytes32 indexed id, uint256 indexed index, address target, uint256 value, bytes data, bytes32 predecessor, uint256 delay)",
  "event CallExecuted(bytes32 indexed id, uint256 indexed index, address target, uint256 value, bytes data)",
];
const TARGET_ABI = [
  "function owner() view returns (address)",
  // ProtocolParameters
  "function setRewardSplit(uint16 contributorsBps, uint16 builderBps)",
  "function setMinQualityScore(uint8 score)",
  "function setDeploymentGate(bool on)",
  "function setDeploymentStake(uint256 stake, uint16 slashBps)",
  "function setPool(address pool)",
  "event ParameterSet(bytes32 indexed name, uint256 oldValue, uint256 newValue)",
  // ModelRegistry
  "function approve(bytes32 manifestHash)",
  "function withdrawApproval(bytes32 manifestHash)",
  "event ModelApproved(bytes32 indexed manifestHash, uint256 indexed proposalId)",
  "event ApprovalWithdrawn(bytes32 indexed manifestHash)",
  "event StakeBonded(uint256 indexed proposalId, bytes32 indexed manifestHash, address indexed builder, uint256 amount)",
  "event StakeReturned(uint256 indexed proposalId, address indexed builder, uint256 amount)",
  "event StakeSlashed(uint256 indexed proposalId, address indexed builder, uint256 slashed, uint256 returned, address pool)",
  // any Ownable target
  "function transferOwnership(address newOwner)",
];

/** The chain answered, but there is nothing to verify (no such contract or proposal): exit 2, without the usage. */
class NotFound extends Error {}

const governorInterface = new ethers.Interface(GOVERNOR_ABI);
const timelockInterface = new ethers.Interface(TIMELOCK_ABI);
const targetInterface = new ethers.Interface(TARGET_ABI);
const ACTION_INTERFACES = [targetInterface, governorInterface, timelockInterface];
const STATES = ["pending", "active", "canceled", "defeated", "succeeded", "queued", "expired", "executed"];
const SUPPORT = ["against", "for", "abstain"];
const STAKE_EVENTS = ["StakeBonded", "StakeReturned", "StakeSlashed"];
const EFFECT_EVENTS = ["ParameterSet", "ModelApproved", "ApprovalWithdrawn", ...STAKE_EVENTS];

function parse(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        rpc: { type: "string" },
        governor: { type: "string" },
        proposal: { type: "string" },
        "from-block": { type: "string" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    throw new UsageError(e.message);
  }
  if (values.help) throw new UsageError("");
  for (const name of ["rpc", "governor", "proposal"]) {
    if (!values[name]) throw new UsageError(`--${name} is required`);
  }
  if (!URL.canParse(values.rpc)) throw new UsageError(`not a URL: ${values.rpc}`);
  if (!ethers.isAddress(values.governor)) throw new UsageError(`not an address: ${values.governor}`);
  let proposalId;
  try {
    proposalId = BigInt(values.proposal);
  } catch {
    throw new UsageError(`not a proposal id (a decimal or 0x-hex number): ${values.proposal}`);
  }
  if (proposalId <= 0n || proposalId >= 2n ** 256n) throw new UsageError(`not a proposal id: ${values.proposal}`);
  const fromBlock = Number(values["from-block"] ?? 0);
  if (!Number.isSafeInteger(fromBlock) || fromBlock < 0) throw new UsageError("--from-block must be a block number");
  return { rpc: values.rpc, governor: ethers.getAddress(values.governor), proposalId, fromBlock, json: values.json };
}

/** The decoded `iface` logs of `address` (any address when null) in blocks from..to, in chain order. */
async function logs(chain, iface, address, names, fromBlock, toBlock, topics = []) {
  const wanted = names.map((n) => iface.getEvent(n).topicHash);
  const found = await rpc(`eth_getLogs ${names.join("/")}`, () =>
    chain.provider.getLogs({ address: address ?? undefined, topics: [wanted, ...topics], fromBlock, toBlock }),
  );
  return found.map((log) => ({ log, event: iface.parseLog(log) }));
}

function decodeAction(target, value, data) {
  for (const iface of ACTION_INTERFACES) {
    const call = iface.parseTransaction({ data, value });
    if (call) {
      const args = call.fragment.inputs.map((input, i) => `${input.name}=${show(call.args[i])}`);
      return { target, value: value.toString(), function: call.signature, args: Object.fromEntries(
        call.fragment.inputs.map((input, i) => [input.name, show(call.args[i])]),
      ), words: `${call.name}(${args.join(", ")})` };
    }
  }
  return { target, value: value.toString(), function: null, args: {}, words: `unknown call ${data.slice(0, 10)}` };
}

function show(value) {
  if (typeof value === "bigint") return value.toString();
  if (Array.isArray(value)) return value.map(show);
  return value;
}

function parameterName(bytes32) {
  try {
    return ethers.decodeBytes32String(bytes32);
  } catch {
    return bytes32;
  }
}

function effect(entry) {
  const { log, event } = entry;
  const args = Object.fromEntries(event.fragment.inputs.map((input, i) => [input.name, show(event.args[i])]));
  if (event.name === "ParameterSet") {
    args.name = parameterName(event.args.name);
    if (args.name === "pool") {
      args.oldValue = ethers.getAddress(ethers.toBeHex(event.args.oldValue, 20));
      args.newValue = ethers.getAddress(ethers.toBeHex(event.args.newValue, 20));
    }
  }
  return { event: event.name, address: log.address, tx: log.transactionHash, block: log.blockNumber, args };
}

async function inspect(chain, options) {
  const { proposalId } = options;
  const governor = new ethers.Contract(options.governor, GOVERNOR_ABI, chain.provider);
  const problems = [];
  const check = (ok, what) => {
    if (!ok) problems.push(what);
    return ok;
  };

  let stateIndex;
  try {
    stateIndex = Number(await governor.state(proposalId));
  } catch (e) {
    if (ethers.isError(e, "CALL_EXCEPTION")) {
      throw new NotFound(`the Governor at ${options.governor} knows no proposal ${proposalId}`);
    }
    throw new NetworkError(`state(${proposalId}): ${e.shortMessage ?? e.message}`);
  }
  const [name, timelockAddress, token, snapshot, deadline, proposer, eta, tally, delay, latest] = await rpc(
    "the Governor's views",
    () =>
      Promise.all([
        governor.name(),
        governor.timelock(),
        governor.token(),
        governor.proposalSnapshot(proposalId),
        governor.proposalDeadline(proposalId),
        governor.proposalProposer(proposalId),
        governor.proposalEta(proposalId),
        governor.proposalVotes(proposalId),
        governor.votingDelay(),
        chain.latestBlock(),
      ]),
  );

  // ProposalCreated: in the block the snapshot implies (created + votingDelay), else anywhere from --from-block
  const idOf = (entry) => entry.event.args.proposalId === proposalId;
  const guess = Math.max(Number(snapshot - delay), 0);
  let created = (await logs(chain, governorInterface, options.governor, ["ProposalCreated"], guess, guess)).find(idOf);
  if (!created) {
    created = (
      await logs(chain, governorInterface, options.governor, ["ProposalCreated"], options.fromBlock, latest)
    ).find(idOf);
  }
  if (!created) {
    throw new NotFound(`no ProposalCreated of ${proposalId} from block ${options.fromBlock}: give --from-block`);
  }
  const p = created.event.args;
  // by position: ethers' Result has a method called `values`, which hides the argument of that name
  const [targets, values, calldatas] = [[...p[2]], [...p[3]], [...p[5]]];
  const descriptionHash = ethers.id(p.description);
  const recomputed = BigInt(
    ethers.keccak256(
      ethers.AbiCoder.defaultAbiCoder().encode(
        ["address[]", "uint256[]", "bytes[]", "bytes32"],
        [targets, values, calldatas, descriptionHash],
      ),
    ),
  );
  check(recomputed === proposalId, "the proposal id is not the hash of the actions and description in ProposalCreated");
  check(p.proposer === proposer, `ProposalCreated names ${p.proposer}, the Governor ${proposer}`);
  const createdBlock = created.log.blockNumber;

  const actions = [];
  for (let i = 0; i < targets.length; i++) {
    const action = decodeAction(targets[i], values[i], calldatas[i]);
    const target = new ethers.Contract(targets[i], TARGET_ABI, chain.provider);
    action.owned_by_timelock = await target.owner().then(
      (owner) => owner === timelockAddress,
      () => targets[i] === options.governor || targets[i] === timelockAddress, // they answer to the timelock
    );
    actions.push(action);
  }

  // votes: every VoteCast for this id, summed per side, against the Governor's own tally
  const voteLogs = await logs(
    chain, governorInterface, options.governor, ["VoteCast", "VoteCastWithParams"], createdBlock, latest,
  ).then((all) => all.filter(idOf));
  const votes = voteLogs.map(({ log, event }) => ({
    voter: event.args.voter,
    support: SUPPORT[Number(event.args.support)] ?? String(event.args.support),
    weight: event.args.weight.toString(),
    reason: event.args.reason,
    tx: log.transactionHash,
    block: log.blockNumber,
  }));
  const sums = { against: 0n, for: 0n, abstain: 0n };
  for (const v of voteLogs) sums[SUPPORT[Number(v.event.args.support)]] += v.event.args.weight;
  check(
    sums.against === tally.againstVotes && sums.for === tally.forVotes && sums.abstain === tally.abstainVotes,
    "the VoteCast events do not add up to proposalVotes",
  );
  const voters = new Set(votes.map((v) => v.voter));
  check(voters.size === votes.length, "an account voted twice");
  const quorum = snapshot < BigInt(latest) ? await rpc("quorum", () => governor.quorum(snapshot)) : null;

  // the Governor's lifecycle events, and the timelock's operation (id: hashOperationBatch with the Governor's salt)
  const lifecycle = (
    await logs(chain, governorInterface, options.governor, ["ProposalQueued", "ProposalExecuted", "ProposalCanceled"],
      createdBlock, latest)
  ).filter(idOf);
  const queued = lifecycle.find((e) => e.event.name === "ProposalQueued");
  const executed = lifecycle.find((e) => e.event.name === "ProposalExecuted");
  const canceled = lifecycle.find((e) => e.event.name === "ProposalCanceled");
  const timelock = new ethers.Contract(timelockAddress, TIMELOCK_ABI, chain.provider);
  const salt = ethers.toBeHex(BigInt(options.governor) * 2n ** 96n ^ BigInt(descriptionHash), 32);
  const operation = await rpc("hashOperationBatch", () =>
    timelock.hashOperationBatch(targets, values, calldatas, ethers.ZeroHash, salt),
  );
  const timelockLogs = await logs(
    chain, timelockInterface, timelockAddress, ["CallScheduled", "CallExecuted"], createdBlock, latest, [operation],
  );
  const calls = (name) =>
    timelockLogs
      .filter((e) => e.event.name === name)
      .map(({ log, event }) => ({
        index: Number(event.args.index),
        target: event.args.target,
        value: event.args.value.toString(),
        data: event.args.data,
        tx: log.transactionHash,
        block: log.blockNumber,
        ...(name === "CallScheduled" ? { delay: event.args.delay.toString() } : {}),
      }));
  const scheduled = calls("CallScheduled");
  const executedCalls = calls("CallExecuted");
  const sameCalls = (list) =>
    list.length === targets.length &&
    list.every((c) => c.target === targets[c.index] && c.value === values[c.index].toString() &&
      c.data === calldatas[c.index]);
  if (queued) check(sameCalls(scheduled), "the timelock did not schedule exactly the proposal's actions");
  if (executed) {
    check(sameCalls(executedCalls), "the timelock did not execute exactly the proposal's actions");
    check(await rpc("isOperationDone", () => timelock.isOperationDone(operation)), "the timelock operation is not done");
  }
  const state = STATES[stateIndex];
  check(!executed || state === "executed", `ProposalExecuted was emitted but the state is ${state}`);
  check(!queued || ["queued", "executed", "canceled"].includes(state), `ProposalQueued but the state is ${state}`);

  // what the execution changed: the effect events in its transaction (from any contract: the report names it)
  let effects = [];
  if (executed) {
    const receipt = await rpc("the execution's receipt", () =>
      chain.provider.getTransactionReceipt(executed.log.transactionHash),
    );
    effects = receipt.logs
      .map((log) => {
        try {
          const event = targetInterface.parseLog(log);
          return event && EFFECT_EVENTS.includes(event.name) ? effect({ log, event }) : null;
        } catch {
          return null;
        }
      })
      .filter(Boolean);
  }
  // a deployment proposal's stake: its events on every target, by the indexed proposal id
  const stake = [];
  for (const target of new Set(targets)) {
    const found = await logs(chain, targetInterface, target, STAKE_EVENTS, createdBlock, latest, [
      ethers.toBeHex(proposalId, 32),
    ]);
    stake.push(...found.map(effect));
  }

  return {
    chain_id: chain.chainId,
    governor: { address: options.governor, name, timelock: timelockAddress, token },
    proposal: {
      id: proposalId.toString(),
      proposer,
      description: p.description,
      description_hash: descriptionHash,
      created: { tx: created.log.transactionHash, block: createdBlock },
      snapshot: snapshot.toString(),
      deadline: deadline.toString(),
      state,
      eta: eta.toString(),
    },
    actions,
    votes,
    tally: {
      against: tally.againstVotes.toString(),
      for: tally.forVotes.toString(),
      abstain: tally.abstainVotes.toString(),
      quorum: quorum === null ? null : quorum.toString(),
      quorum_reached: quorum === null ? null : tally.forVotes + tally.abstainVotes >= quorum,
    },
    timelock: {
      operation,
      scheduled,
      executed: executedCalls,
    },
    lifecycle: {
      queued: queued ? { tx: queued.log.transactionHash, block: queued.log.blockNumber,
        eta: queued.event.args.etaSeconds.toString() } : null,
      executed: executed ? { tx: executed.log.transactionHash, block: executed.log.blockNumber } : null,
      canceled: canceled ? { tx: canceled.log.transactionHash, block: canceled.log.blockNumber } : null,
    },
    effects,
    stake,
    problems,
  };
}

function report(r) {
  const lines = [];
  const p = r.proposal;
  lines.push(`proposal ${p.id}`);
  lines.push(`  governor ${r.governor.address} (${r.governor.name}) on chain ${r.chain_id}; timelock ${r.governor.timelock}`);
  lines.push(`  proposer ${p.proposer}, created in block ${p.created.block} (${p.created.tx})`);
  lines.push(`  description: ${p.description}`);
  lines.push(`state: ${p.state} (voting blocks ${p.snapshot}..${p.deadline})`);
  lines.push("actions:");
  for (const [i, a] of r.actions.entries()) {
    const owner = a.owned_by_timelock ? "" : " (not owned by the timelock: it would revert)";
    lines.push(`  ${i + 1}. ${a.target}.${a.words}${a.value !== "0" ? ` with ${a.value} wei` : ""}${owner}`);
  }
  lines.push(`votes: for ${r.tally.for}, against ${r.tally.against}, abstain ${r.tally.abstain}` +
    (r.tally.quorum === null ? " (quorum: at the snapshot block, not reached yet)"
      : `; quorum ${r.tally.quorum} ${r.tally.quorum_reached ? "reached" : "not reached"} (for + abstain)`));
  for (const v of r.votes) lines.push(`  ${v.voter} ${v.support} ${v.weight} (block ${v.block})${v.reason ? `: ${v.reason}` : ""}`);
  const life = r.lifecycle;
  if (life.queued) lines.push(`queued in block ${life.queued.block}, executable from ${new Date(Number(life.queued.eta) * 1000).toISOString()} (${life.queued.tx})`);
  lines.push(`timelock operation ${r.timelock.operation}: ${r.timelock.scheduled.length} call(s) scheduled, ${r.timelock.executed.length} executed`);
  if (life.executed) lines.push(`executed in block ${life.executed.block} (${life.executed.tx})`);
  if (life.canceled) lines.push(`canceled in block ${life.canceled.block} (${life.canceled.tx})`);
  if (r.effects.length) lines.push("effects of the execution:");
  for (const e of r.effects) {
    const a = e.args;
    const words = e.event === "ParameterSet" ? `${a.name}: ${a.oldValue} -> ${a.newValue}`
      : e.event === "ModelApproved" ? `manifest ${a.manifestHash} approved`
      : e.event === "ApprovalWithdrawn" ? `approval of ${a.manifestHash} withdrawn`
      : JSON.stringify(a);
    lines.push(`  ${e.event} at ${e.address}: ${words}`);
  }
  if (r.stake.length) lines.push("stake:");
  for (const e of r.stake) {
    const a = e.args;
    const words = e.event === "StakeBonded" ? `${a.builder} bonded ${a.amount}`
      : e.event === "StakeReturned" ? `${a.amount} returned to ${a.builder}`
      : `${a.slashed} forfeited to ${a.pool}, ${a.returned} returned to ${a.builder}`;
    lines.push(`  ${e.event} (block ${e.block}): ${words}`);
  }
  for (const problem of r.problems) lines.push(`FAIL ${problem}`);
  lines.push(r.problems.length ? `summary: ${r.problems.length} problem(s)` : "summary: the chain data agree");
  return `${lines.join("\n")}\n`;
}

async function main(argv) {
  const options = parse(argv);
  const chain = await Chain.connect(options.rpc);
  if ((await chain.code(options.governor)) === "0x") throw new NotFound(`no contract at ${options.governor}`);
  const result = await inspect(chain, options);
  process.stdout.write(options.json ? `${JSON.stringify(result, null, 2)}\n` : report(result));
  return result.problems.length ? 1 : 0;
}

runCli(main, USAGE, NotFound);

// A reward epoch: its document rehashed and summed, its tree rebuilt, the distributor's record of it, each leaf's
// claim proof and paid state, and the runs its accruals name.
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

import { checkAnchor } from "../anchor.js";
import { eventsIn } from "../chain.js";
import { big, documentHash, sameJson } from "../documents.js";
import { checkEnvelope } from "../proofs.js";
import { once } from "./guard.js";
import { checkRun } from "./runs.js";

export const CLAIM_ENCODING = ["uint256", "address", "uint256"];
const lower = (v) => (typeof v === "string" ? v.toLowerCase() : v);

export function checkEpoch(ctx, number) {
  const where = `epoch ${number}`;
  return once(ctx, `epoch ${number}`, where, async () => {
    const { site, report } = ctx;
    const epoch = await site.json(`/api/rewards/epochs/${number}/`);
    const document = epoch.document;
    if (!report.check(document && typeof document === "object", where, "document served as an object", typeof document)) {
      return;
    }
    report.same(document.schema, "openledger.reward_epoch.v1", where, "document schema");
    const hash = documentHash(document);
    report.same(epoch.document_hash, hash, where, "document hash = keccak256(RFC 8785 of the document)");
    report.same(document.epoch, number, where, "document names this epoch");
    report.same(epoch.number, number, where, "epoch number");

    const leaves = document.leaves ?? [];
    let total = 0n;
    for (const leaf of leaves) {
      const lwhere = `${where} leaf ${leaf.index}`;
      const sum = (leaf.accruals ?? []).reduce((s, a) => s + big(a.amount), 0n);
      report.same(big(leaf.amount).toString(), sum.toString(), lwhere, "accruals sum to the leaf's amount");
      total += big(leaf.amount);
    }
    report.same(big(document.total).toString(), total.toString(), where, "leaf amounts sum to the document's total");
    report.same(epoch.total, document.total, where, "total is the document's");
    const values = leaves.map((l) => [String(l.index), l.account, big(l.amount).toString()]);
    if (!report.check(values.length > 0, where, "epoch has leaves", "none")) return;
    const root = StandardMerkleTree.of(values, CLAIM_ENCODING).root;
    report.same(document.root, root, where, "root rebuilt from the document's leaves");
    report.same(epoch.root, root, where, "epoch root");
    if (epoch.tree) checkServedTree(report, where, epoch.tree, values, root);

    await checkDistributor(ctx, where, epoch, number, root, document.total);
    await checkAnchor(ctx, where, {
      anchor: epoch.document_anchor,
      root: hash,
      kind: "reward_epoch",
      subject: `reward_epoch:${number}`,
    });
    for (const leaf of leaves) {
      const lwhere = `${where} leaf ${leaf.index}`;
      await once(ctx, lwhere, lwhere, () => checkLeaf(ctx, lwhere, number, leaf, root));
    }
  });
}

/** The served OpenZeppelin dump: a valid tree (load() rehashes its values), with this root and these leaves. */
function checkServedTree(report, where, dump, values, root) {
  let served;
  try {
    served = StandardMerkleTree.load(dump);
    served.validate();
  } catch (e) {
    report.fail(where, "the served tree is a valid StandardMerkleTree dump", e.message);
    return;
  }
  report.same(served.root, root, where, "the served tree's root");
  const servedValues = [...served.entries()].map(([, v]) => v.map((x) => String(x).toLowerCase())).sort();
  const ours = values.map((v) => v.map((x) => x.toLowerCase())).sort();
  report.check(sameJson(servedValues, ours), where, "the served tree holds the document's leaves", "differs");
}

async function checkDistributor(ctx, where, epoch, number, root, total) {
  const { report, chain } = ctx;
  const facts = epoch.chain ?? {};
  const address = lower(facts.contract_address);
  report.same(facts.chain_id, chain.chainId, where, "epoch chain id is the RPC's");
  if (
    !report.check(
      ctx.distributors.has(address),
      where,
      "epoch contract is a RewardDistributor the site publishes",
      `${facts.contract_address}`,
    )
  ) {
    return;
  }
  const info = await chain.epochInfo(address, number);
  report.same(info.root, root, where, "RewardDistributor.epochInfo root");
  report.same(big(total).toString(), info.total.toString(), where, "RewardDistributor.epochInfo total");
  report.check(info.publishedAt > 0n, where, "epoch published on chain", "publishedAt is 0");
  const receipt = facts.tx_hash ? await chain.receipt(facts.tx_hash) : null;
  if (!report.check(receipt && receipt.status === 1, where, "publish transaction mined and succeeded", facts.tx_hash)) {
    return;
  }
  report.same(facts.block_number, receipt.blockNumber, where, "publish block");
  const event = eventsIn(receipt, address, "EpochPublished").find((e) => e.args.epoch === BigInt(number));
  report.check(
    event && lower(event.args.root) === lower(root) && event.args.total === big(total),
    where,
    "EpochPublished(epoch, root, total) event in the publish transaction",
    event ? `event root ${event.args.root}, total ${event.args.total}` : "no event",
  );
}

async function checkLeaf(ctx, where, number, leaf, root) {
  const { site, report, chain } = ctx;
  const value = [String(leaf.index), leaf.account, big(leaf.amount).toString()];
  const envelope = await site.json(`/api/rewards/epochs/${number}/leaves/${leaf.index}/proof/`);
  checkEnvelope(report, where, envelope, { artifact: "claim", encoding: CLAIM_ENCODING, value, root });
  const anchor = envelope.anchor ?? {};
  report.same(anchor.contract, "RewardDistributor", where, "claim proof names the RewardDistributor");
  report.check(ctx.distributors.has(lower(anchor.contract_address)), where, "claim proof's contract", `${anchor.contract_address}`);
  report.same(anchor.epoch, number, where, "claim proof's epoch");
  report.same(anchor.chain_id, chain.chainId, where, "claim proof's chain id");
  const address = lower(anchor.contract_address) ?? ctx.distributor;
  if (ctx.distributors.has(address)) {
    const paid = await chain.isClaimed(address, number, leaf.index);
    const status = envelope.claim?.status;
    report.check(
      paid === (status === "claimed"),
      where,
      `claim status "${status}" agrees with isClaimed (${paid})`,
      "differs",
    );
    if (paid && envelope.claim?.tx_hash) {
      const receipt = await chain.receipt(envelope.claim.tx_hash);
      const event = receipt && eventsIn(receipt, address, "Claimed").find((e) => e.args.index === BigInt(leaf.index));
      report.check(
        event &&
          event.args.epoch === BigInt(number) &&
          lower(event.args.account) === lower(leaf.account) &&
          event.args.amount === big(leaf.amount),
        where,
        "Claimed(epoch, index, account, amount) event in the claim transaction",
        event ? `event account ${event.args.account}, amount ${event.args.amount}` : "no event",
      );
    }
  }
  for (const accrual of leaf.accruals ?? []) {
    if (!accrual.run) continue;
    const runHash = await checkRun(ctx, accrual.run);
    report.same(accrual.run_hash, runHash, where, `accrual ${accrual.id}'s run hash is run ${accrual.run}'s`);
  }
}

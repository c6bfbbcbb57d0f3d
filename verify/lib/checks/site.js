// The site as a whole: its published contracts checked on chain, then every public artifact it lists.
import { KIND_CODES } from "../chain.js";
import { checkEpoch } from "./epochs.js";
import { once } from "./guard.js";
import { checkReceiptList } from "./receipts.js";
import { checkRecord, checkSnapshot } from "./snapshots.js";
import { checkVersion } from "./versions.js";

const LEAF_ENCODINGS = {
  record: ["bytes32", "address", "uint256"],
  run: ["bytes32"],
  receipt: ["bytes32"],
  claim: ["uint256", "address", "uint256"],
};
const lower = (v) => (typeof v === "string" ? v.toLowerCase() : v);

/** GET /api/chain/: the contracts the site says it uses, each checked on chain (code at the address, deployed by
 * the transaction and in the block it names). Sets ctx.registries/distributors: the addresses proofs may name
 * (only the pinned one where --registry/--distributor was given). */
export async function checkChainApi(ctx, { registry, distributor }) {
  const { site, report, chain } = ctx;
  const where = "chain";
  // pinned addresses hold even when the site's own description is missing or wrong
  if (registry) ctx.registries = new Set([registry.toLowerCase()]);
  if (distributor) ctx.distributors = new Set([distributor.toLowerCase()]);
  ctx.registry = registry?.toLowerCase();
  ctx.distributor = distributor?.toLowerCase();
  const info = await site.json("/api/chain/");
  report.same(info.chain_id, chain.chainId, where, "the site's chain id is the RPC's");
  const all = [...(info.contracts ?? []).map((c) => ({ ...c, active: c.active ?? true })), ...(info.retired ?? [])];
  for (const contract of all) {
    const cwhere = `contract ${contract.name} ${contract.address}`;
    const code = await chain.code(contract.address);
    report.check(code && code !== "0x", cwhere, "has code on chain", "no code at this address");
    if (contract.deploy_tx_hash) {
      const receipt = await chain.receipt(contract.deploy_tx_hash);
      let created = receipt && lower(receipt.contractAddress) === lower(contract.address);
      if (receipt && !created && contract.name === "RewardToken" && receipt.contractAddress) {
        // the token is created by the distributor's constructor: that transaction deployed the distributor, whose
        // token() must be this address
        created = lower(await chain.tokenOf(receipt.contractAddress)) === lower(contract.address);
      }
      report.check(
        created,
        cwhere,
        "deployed by the transaction the site names",
        receipt ? `that transaction deployed ${receipt.contractAddress}` : "no such transaction",
      );
      if (receipt) report.same(contract.deploy_block, receipt.blockNumber, cwhere, "deploy block");
    }
  }
  const named = (name) => all.filter((c) => c.name === name).map((c) => lower(c.address));
  const active = (name) => lower(all.find((c) => c.name === name && c.active)?.address);
  ctx.registries = new Set(named("LineageRegistry"));
  ctx.distributors = new Set(named("RewardDistributor"));
  ctx.registry = active("LineageRegistry");
  ctx.distributor = active("RewardDistributor");
  for (const [flag, pin, set, key] of [
    ["--registry", registry, ctx.registries, "registry"],
    ["--distributor", distributor, ctx.distributors, "distributor"],
  ]) {
    if (!pin) continue;
    report.check(set.has(lower(pin)), where, `${flag} ${pin} is a contract the site publishes`, [...set].join(", "));
    set.clear();
    set.add(lower(pin));
    ctx[key] = lower(pin);
  }
  for (const [kind, code] of Object.entries(info.anchor_kinds ?? {})) {
    if (kind in KIND_CODES) report.same(code, KIND_CODES[kind], where, `anchor kind ${kind}'s code`);
  }
  for (const [name, encoding] of Object.entries(LEAF_ENCODINGS)) {
    const served = info.leaf_encodings?.[name];
    report.check(
      JSON.stringify(served) === JSON.stringify(encoding),
      where,
      `${name} leaf encoding`,
      `${JSON.stringify(served)}`,
    );
  }
}

/** Everything public: each Datanet's snapshots (and one record proof each) and receipts, each published version,
 * each reward epoch (and, through its accruals, the runs it pays for). */
export async function checkSite(ctx) {
  const list = (path, where) => once(ctx, `list ${path}`, where, () => ctx.site.all(path)).then((items) => items ?? []);
  const datanets = await list("/api/datanets/", "datanet list");
  for (const datanet of datanets) {
    for (const snapshot of await list(`/api/datanets/${datanet.slug}/snapshots/`, `datanet ${datanet.slug}`)) {
      await checkSnapshot(ctx, datanet.slug, snapshot.number);
      await checkRecord(ctx, datanet.slug, snapshot.number);
    }
  }
  for (const datanet of datanets) {
    await checkReceiptList(ctx, `/api/datanets/${datanet.slug}/receipts/`, `datanet ${datanet.slug}`);
  }
  for (const version of await list("/api/modelfactory/versions/", "version list")) await checkVersion(ctx, version.id);
  for (const epoch of await list("/api/rewards/epochs/", "epoch list")) await checkEpoch(ctx, epoch.number);
}

// The check every anchored root gets: the anchor the site reports, against the LineageRegistry on chain.
import { KIND_CODES, eventsIn } from "./chain.js";
import { subjectId } from "./documents.js";

const lower = (v) => (typeof v === "string" ? v.toLowerCase() : v);

/** Check that `root` is anchored in a LineageRegistry the site publishes, for `subject` (rebuilt by the caller from
 * the artifact's own fields) with kind `kind`, in the transaction and block `anchor` names. A root not confirmed yet
 * is a `wait`. Returns true when every check passed. */
export async function checkAnchor(ctx, where, { anchor, root, kind, subject }) {
  const { report, chain } = ctx;
  if (!anchor) {
    report.wait(where, "anchor", "no anchor yet");
    return false;
  }
  if (anchor.status !== "confirmed") {
    report.wait(where, "anchor", `status ${anchor.status}`);
    return false;
  }
  const sid = subjectId(subject);
  let good = report.same(anchor.chain_id, chain.chainId, where, "anchor chain id is the RPC's");
  const address = lower(anchor.contract_address);
  good =
    report.check(
      ctx.registries.has(address),
      where,
      "anchor contract is a LineageRegistry the site publishes",
      `${anchor.contract_address} is not among ${[...ctx.registries].join(", ")}`,
    ) && good;
  good = report.same(anchor.root, root, where, "anchored root is the root rebuilt here") && good;
  good = report.same(anchor.kind_code, KIND_CODES[kind], where, `anchor kind code (${kind})`) && good;
  good = report.same(anchor.subject, subject, where, "anchor subject rebuilt from the artifact's fields") && good;
  good = report.same(anchor.subject_id, sid, where, `subject id = keccak256("${subject}")`) && good;
  if (!address) return false;

  const info = await chain.rootInfo(address, root);
  const anchored = info.blockNumber > 0n;
  good = report.check(anchored, where, "rootInfo(root): anchored on chain", "the registry never saw this root") && good;
  if (!anchored) return false;
  const firstIsOurs = Number(info.kind) === KIND_CODES[kind] && lower(info.subjectId) === sid;

  const receipt = anchor.tx_hash ? await chain.receipt(anchor.tx_hash) : null;
  if (!report.check(receipt && receipt.status === 1, where, "anchor transaction mined and succeeded", anchor.tx_hash)) {
    return false;
  }
  good = report.same(anchor.block_number, receipt.blockNumber, where, "anchor block") && good;
  const event = eventsIn(receipt, address, "Anchored").find((e) => lower(e.args.root) === lower(root));
  const eventIsOurs = event && Number(event.args.kind) === KIND_CODES[kind] && lower(event.args.subjectId) === sid;
  good =
    report.check(
      eventIsOurs,
      where,
      "Anchored(kind, subjectId, root) event in the anchor transaction",
      event ? `event has kind ${event.args.kind}, subject ${event.args.subjectId}` : "no Anchored event for this root",
    ) && good;
  if (firstIsOurs) {
    report.ok(where, "rootInfo(root) kind and subject id");
  } else {
    // A root anchored again (two snapshots with the same records) keeps its first record on chain; the event of
    // this subject's own anchoring, checked above, is then what ties the root to it.
    const detail = `first anchored with kind ${info.kind}, subject ${info.subjectId}`;
    good = report.check(eventIsOurs, where, "rootInfo(root) kind and subject id (or this subject's event)", detail) && good;
  }
  const latest = await chain.latestBlock();
  good = report.check(latest >= receipt.blockNumber, where, "anchor block is in the chain", `latest ${latest}`) && good;
  return good;
}

/** The envelope's anchor must be the artifact's, and the registry must verify the leaf on chain. */
export async function checkOnChainProof(ctx, where, { anchor, root, leaf, proof }) {
  const address = lower(anchor?.contract_address);
  if (!address || !ctx.registries.has(address)) {
    ctx.report.fail(where, "LineageRegistry.verify", `no known registry named by the proof (${anchor?.contract_address})`);
    return false;
  }
  const valid = await ctx.chain.verifyLeaf(address, root, leaf, proof);
  return ctx.report.check(valid, where, "LineageRegistry.verify(root, leaf, proof) on chain", "false");
}

// Contribution, curation and revocation receipts: each document rehashed, its batch proof checked off and on chain.
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

import { checkAnchor, checkOnChainProof } from "../anchor.js";
import { documentHash } from "../documents.js";
import { checkEnvelope } from "../proofs.js";
import { once } from "./guard.js";

const KINDS = ["contribution", "curation", "revocation"];

/** Every receipt a list endpoint gives (a Datanet's, or a contribution's). */
export function checkReceiptList(ctx, path, where) {
  return once(ctx, `receipts ${path}`, `receipts of ${where}`, async () => {
    const items = await ctx.site.all(path);
    ctx.report.ok(`receipts of ${where}`, `${items.length} receipts listed`);
    for (const item of items) await checkReceipt(ctx, item);
  });
}

export function checkReceipt(ctx, item) {
  const where = `${item.kind} receipt ${item.id}`;
  return once(ctx, `receipt ${item.id}`, where, async () => {
    const { report } = ctx;
    const document = item.document;
    if (!report.check(KINDS.includes(item.kind), where, "receipt kind", `${item.kind}`)) return;
    if (document === null && !item.proof) {
      // a submission's receipt is completed (its records' root computed) off the upload's path, then sealed
      report.wait(where, "document", "not completed yet");
      return;
    }
    if (!report.check(document && typeof document === "object", where, "document served as an object", typeof document)) {
      return;
    }
    report.same(document.schema, `openledger.receipt.${item.kind}.v1`, where, "document schema");
    const hash = documentHash(document);
    report.same(item.document_hash, hash, where, "document hash = keccak256(RFC 8785 of the document)");
    if (item.kind === "contribution") checkRecordsRoot(ctx, where, document);
    if (!item.proof) {
      report.wait(where, "proof", "its batch is not sealed yet");
      return;
    }
    const artifact = `${item.kind}_receipt`;
    const held = checkEnvelope(report, where, item.proof, { artifact, encoding: ["bytes32"], value: [hash] });
    if (!held) return;
    report.check(item.proof.batch && item.proof.batch.id !== undefined, where, "proof names its batch", "no batch");
    await checkOnChainProof(ctx, where, { anchor: item.proof.anchor, ...held });
    await checkAnchor(ctx, where, {
      anchor: item.proof.anchor,
      root: held.root,
      kind: "receipt_batch",
      subject: `receipt_batch:${held.root}`,
    });
  });
}

/** The receipt's `records_root` is the tree over its records' hashes: rebuilt when every one of them is in a public
 * snapshot checked in this run (records still pending, rejected or deduplicated are not published); its Datanet is then the
 * snapshot's too (not its contributor address: the leaf holds the wallet linked at freeze time, the receipt the one
 * at submission). */
function checkRecordsRoot(ctx, where, document) {
  const found = ctx.snapshotLines.filter(({ line }) => Number(line.contribution_id) === Number(document.contribution));
  if (found.length === 0) return;
  const { line } = found[0];
  if (line.datanet_id !== undefined) ctx.report.same(document.datanet?.id, line.datanet_id, where, "datanet id is the snapshot's");
  const unique = [...new Set(found.map(({ hash }) => hash))];
  if (unique.length !== Number(document.record_count)) return;
  const root = StandardMerkleTree.of(unique.map((h) => [h]), ["bytes32"]).root;
  ctx.report.same(document.records_root, root, where, "records_root rebuilt from the snapshot's records");
}

// A frozen snapshot: its JSONL's records rehashed, its tree rebuilt, its root's anchor, and one record's proof.
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

import { checkAnchor, checkOnChainProof } from "../anchor.js";
import { recordHash, sha256Hex } from "../documents.js";
import { checkEnvelope } from "../proofs.js";
import { once } from "./guard.js";

export const RECORD_ENCODING = ["bytes32", "address", "uint256"];
// What a JSONL line carries besides the record's own fields (the leaf's parts, where it sits, and whether the record
// was revoked or erased since: docs/revocation.md).
export const LINE_EXTRAS = new Set([
  "id", "record_id", "record_hash", "contribution_id", "contributor", "licence", "leaf_index", "datanet_id",
  "revoked", "erased",
]);

/** The record's own fields in a JSONL line; an optional field the record left out is written as "" (the platform
 * refuses empty text, so "" is never data). */
export function recordFields(line) {
  return Object.fromEntries(Object.entries(line).filter(([k, v]) => !LINE_EXTRAS.has(k) && v !== ""));
}

const recordId = (line) => line.record_id ?? line.id;

/** Each line's leaf value [record_hash, contributor, contribution_id], the lines whose hash differs from the one
 * rebuilt from their fields, and how many were erased: an erased record's fields are gone, so it cannot be rehashed;
 * its stated record_hash is taken as its leaf's, and the tree's root (checked against the anchor) still vouches for
 * it, since a changed hash would change the root. */
export function leafValues(lines) {
  const values = [];
  const bad = [];
  let erased = 0;
  for (const line of lines) {
    let hash;
    if (line.erased === true) {
      hash = String(line.record_hash).toLowerCase();
      erased += 1;
    } else {
      hash = recordHash(recordFields(line));
      if (hash !== String(line.record_hash).toLowerCase()) bad.push(`record ${recordId(line)} (line ${values.length + 1})`);
    }
    values.push([hash, line.contributor, String(line.contribution_id)]);
  }
  return { values, bad, erased };
}

/** Check a snapshot (once) and resolve to what its record proofs are checked against: {detail, lines, values,
 * root}; undefined when it could not be read. */
export function checkSnapshot(ctx, slug, number) {
  const where = `snapshot ${slug}#${number}`;
  return once(ctx, `snapshot ${slug} ${number}`, where, async () => {
    const { site, report } = ctx;
    const base = `/api/datanets/${slug}/snapshots/${number}/`;
    const detail = await site.json(base);
    report.same(detail.number, number, where, "snapshot number");
    report.check(Number.isInteger(detail.datanet_id), where, "the API gives the datanet id", `${detail.datanet_id}`);

    const bytes = await site.bytes(`${base}download/`);
    const text = new TextDecoder().decode(bytes);
    const lines = text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
    const manifest = await site.json(`${base}manifest/`);
    report.same(manifest.jsonl?.sha256, sha256Hex(bytes), where, "JSONL sha256 is the manifest's");
    if (manifest.datanet?.id !== undefined) report.same(manifest.datanet.id, detail.datanet_id, where, "manifest datanet id");

    const { values, bad, erased } = leafValues(lines);
    report.check(
      bad.length === 0,
      where,
      `${lines.length - erased} record hashes rebuilt from their fields`,
      `differs for ${bad.slice(0, 5).join(", ")}${bad.length > 5 ? ` and ${bad.length - 5} more` : ""}`,
    );
    if (erased > 0) {
      report.ok(where, erased === 1 ? "1 erased record taken at its stated hash" : `${erased} erased records taken at their stated hash`);
    }
    report.check(
      lines.every((l) => recordId(l) !== undefined),
      where,
      "every JSONL line names its record id",
      "a line has no record_id",
    );
    if (lines.length === 0) {
      report.fail(where, "snapshot tree", "the JSONL holds no records");
      return undefined;
    }
    const root = StandardMerkleTree.of(values, RECORD_ENCODING).root;
    report.same(detail.merkle_root, root, where, "merkle root rebuilt from the JSONL's leaf values");
    report.same(manifest.merkle?.root, root, where, "manifest merkle root");
    ctx.snapshotLines.push(...lines.map((line, i) => ({ line, hash: values[i][0] })));
    await checkAnchor(ctx, where, {
      anchor: detail.anchor,
      root,
      kind: "snapshot",
      subject: `snapshot:${detail.datanet_id}:${number}`,
    });

    return { where, base, detail, lines, values, root };
  });
}

/** A record's proof, against its snapshot as rebuilt here (`id` undefined: the snapshot's first record). */
export async function checkRecord(ctx, slug, number, id) {
  const snap = await checkSnapshot(ctx, slug, number);
  if (!snap) return;
  const { where, base, detail, lines, values, root } = snap;
  const wanted = id ?? recordId(lines[0]);
  const rwhere = `record ${wanted} in ${where}`;
  const index = lines.findIndex((l) => Number(recordId(l)) === Number(wanted));
  if (!ctx.report.check(index >= 0, rwhere, "record is in the snapshot's JSONL", "not found")) return;
  await once(ctx, `record ${slug} ${number} ${wanted}`, rwhere, () =>
    checkRecordProof(ctx, rwhere, `${base}records/${wanted}/proof/`, { detail, value: values[index], root }),
  );
}

async function checkRecordProof(ctx, where, path, { detail, value, root }) {
  const envelope = await ctx.site.json(path);
  const held = checkEnvelope(ctx.report, where, envelope, { artifact: "record", encoding: RECORD_ENCODING, value, root });
  ctx.report.same(envelope.snapshot?.datanet_id, detail.datanet_id, where, "proof names the snapshot's datanet id");
  ctx.report.same(envelope.snapshot?.number, detail.number, where, "proof names the snapshot's number");
  ctx.report.same(envelope.anchor?.tx_hash, detail.anchor?.tx_hash, where, "proof's anchor is the snapshot's");
  if (held) await checkOnChainProof(ctx, where, { anchor: envelope.anchor, ...held });
}

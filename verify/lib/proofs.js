// The checks every proof envelope gets: its vocabulary, its value rebuilt by the caller, its leaf, its path.
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

import { sameJson, leafHash } from "./documents.js";

export const PROOF_SCHEMA = "openledger.proof.v1";

/** The value in the form StandardMerkleTree's dump uses: bytes32 lowercase hex, addresses as given (checked
 * case-insensitively), uint256 as decimal strings. */
export function normalValue(encoding, value) {
  return encoding.map((type, i) => {
    const v = value[i];
    if (type === "uint256") return BigInt(v).toString();
    return typeof v === "string" ? v.toLowerCase() : v;
  });
}

/** Check `envelope` as a proof that `value` (rebuilt by the caller from what it parsed, never taken from the
 * envelope) is a leaf of `root` (when given) under `encoding`. Returns {leaf, root, proof} when the proof holds
 * off chain, else null. */
export function checkEnvelope(report, where, envelope, { artifact, encoding, value, root }) {
  if (!envelope || typeof envelope !== "object") {
    report.fail(where, "proof", "no proof envelope served");
    return null;
  }
  let good = report.same(envelope.schema, PROOF_SCHEMA, where, "proof schema");
  good = report.same(envelope.artifact, artifact, where, "proof artifact") && good;
  good = report.same(envelope.format, "standard-v1", where, "proof format") && good;
  good =
    report.check(
      sameJson(envelope.leafEncoding, encoding),
      where,
      "proof leaf encoding",
      `expected ${JSON.stringify(encoding)}, got ${JSON.stringify(envelope.leafEncoding)}`,
    ) && good;
  let served;
  try {
    served = normalValue(encoding, envelope.value ?? []);
  } catch {
    served = envelope.value;
  }
  const rebuilt = normalValue(encoding, value);
  good =
    report.check(
      sameJson(served, rebuilt),
      where,
      "proof value is the leaf rebuilt from the artifact's fields",
      `served ${JSON.stringify(envelope.value)}, rebuilt ${JSON.stringify(rebuilt)}`,
    ) && good;
  const leaf = leafHash(encoding, value);
  good = report.same(envelope.leaf, leaf, where, "proof leaf = keccak256(keccak256(abi.encode(value)))") && good;
  if (root !== undefined) good = report.same(envelope.root, root, where, "proof root is the artifact's root") && good;
  let holds = false;
  try {
    holds = StandardMerkleTree.verify(envelope.root, encoding, value, envelope.proof);
  } catch (e) {
    report.fail(where, "StandardMerkleTree.verify", e.message);
    return null;
  }
  good = report.check(holds, where, "StandardMerkleTree.verify(root, leafEncoding, value, proof)", "false") && good;
  return holds ? { leaf, root: envelope.root, proof: envelope.proof, good } : null;
}

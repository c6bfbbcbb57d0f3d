// Rebuilding what the server hashed, from the fields it served: records, JCS documents, leaves, files.
import { createHash } from "node:crypto";

import canonicalize from "canonicalize";
import { ethers } from "ethers";

const utf8 = new TextEncoder();

export const keccakText = (text) => ethers.keccak256(utf8.encode(text));
export const keccakBytes = (bytes) => ethers.keccak256(bytes);
export const sha256Hex = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** keccak256 of the document's RFC 8785 bytes, rebuilt from the parsed object. */
export const documentHash = (document) => keccakText(canonicalize(document));

/** Same JSON value (compared through their canonical forms). */
export const sameJson = (a, b) => canonicalize(a) === canonicalize(b);

/** A record's hash: keccak256 of its canonical JSON (sorted keys, no whitespace, UTF-8, NFC strings). A record
 * holds only strings, arrays and objects, for which the platform's canonical form and RFC 8785 are the same bytes. */
export function recordHash(fields) {
  return keccakText(canonicalize(nfc(fields)));
}

function nfc(value) {
  if (typeof value === "string") return value.normalize("NFC");
  if (Array.isArray(value)) return value.map(nfc);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k.normalize("NFC"), nfc(v)]));
  }
  return value;
}

/** The StandardMerkleTree leaf of `value` under `encoding`: keccak256(keccak256(abi.encode(value))). */
export function leafHash(encoding, value) {
  const inner = ethers.keccak256(ethers.AbiCoder.defaultAbiCoder().encode(encoding, value));
  return ethers.keccak256(inner);
}

/** A subject id: keccak256 of the subject string's UTF-8. */
export const subjectId = (subject) => keccakText(subject);

/** Hash a document as its schema says: v2+ (and receipts, epochs) by JCS of the parsed object; v1 manifests and run
 * facts (Python's json.dumps) by their stored text, which must parse to the same object. Returns
 * {hash, how, problem}. */
export function hashDocument({ document, text }) {
  const schema = document?.schema ?? (text ? safeParse(text)?.schema : undefined);
  if (schema && /\.v1$/.test(schema) && /model_version|inference_run/.test(schema)) {
    if (typeof text !== "string") return { problem: `a ${schema} document needs its stored text (document_text)` };
    const parsed = safeParse(text);
    if (parsed === undefined) return { problem: "document_text is not JSON" };
    if (document !== undefined && !sameJson(parsed, document)) {
      return { problem: "document_text does not parse to the served document" };
    }
    return { hash: keccakText(text), how: "keccak256 of the stored v1 text", schema };
  }
  const value = document ?? safeParse(text);
  if (value === undefined) return { problem: "no document to hash" };
  return { hash: documentHash(value), how: "keccak256 of RFC 8785", schema };
}

export function safeParse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A decimal string or number as a BigInt (throws on anything else). */
export function big(value) {
  if (typeof value === "bigint") return value;
  if (typeof value === "number" && Number.isSafeInteger(value)) return BigInt(value);
  if (typeof value === "string" && /^[0-9]+$/.test(value)) return BigInt(value);
  throw new Error(`not an unsigned integer: ${JSON.stringify(value)}`);
}

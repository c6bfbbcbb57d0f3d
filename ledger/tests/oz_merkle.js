// Reference answers from @openzeppelin/merkle-tree for ledger/tests/test_merkle.py.
// stdin: {"types": [...], "values": [[...], ...], "proofIndices": [...], "multiproof": [...], "load": <standard-v1 dump>}
// stdout: {"root", "proofs": {index: [...]}, "multiproof", "loadedRoot"}
"use strict";

const path = require("path");
const { StandardMerkleTree } = require(path.resolve(__dirname, "..", "..", "node_modules", "@openzeppelin/merkle-tree"));

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const request = JSON.parse(input);
  const tree = StandardMerkleTree.of(request.values, request.types);
  const proofs = {};
  for (const index of request.proofIndices) proofs[index] = tree.getProof(index);
  const result = { root: tree.root, proofs };
  if (request.multiproof) result.multiproof = tree.getMultiProof(request.multiproof);
  if (request.load) result.loadedRoot = StandardMerkleTree.load(request.load).root;
  process.stdout.write(JSON.stringify(result));
});

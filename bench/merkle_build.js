// Times @openzeppelin/merkle-tree building the same tree as bench/merkle.py. stdin: {"values": [...]}.
"use strict";
const path = require("path");
const { StandardMerkleTree } = require(path.resolve(__dirname, "..", "node_modules", "@openzeppelin/merkle-tree"));

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const { values } = JSON.parse(input);
  const started = process.hrtime.bigint();
  const tree = StandardMerkleTree.of(values, ["bytes32", "address", "uint256"]);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  process.stdout.write(JSON.stringify({ root: tree.root, seconds, proof0: tree.getProof(0) }));
});

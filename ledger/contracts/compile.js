#!/usr/bin/env node
// Compiles each contract (LineageRegistry, the reward and the governance contracts) with the pinned npm solc and writes
// build/<Contract>.json, one compiler run per contract so that each artifact records exactly the sources it uses.
//
// The artifact is committed, so it must be byte-for-byte reproducible: keys are sorted, sources are named by their
// import path (never an absolute path), and the compiler version and settings are recorded with a sha256 of every
// source file used. `--stdout` prints them instead of writing them, as one JSON object from each name to its
// artifact's text (the test compares them with the committed files, loading the compiler once for all).
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

const ROOT = path.resolve(__dirname, "..", "..");
const NODE_MODULES = path.join(ROOT, "node_modules");
const CONTRACTS = [
  "LineageRegistry",
  "RewardToken",
  "RewardDistributor",
  "OpenLedgerTimelock",
  "OpenLedgerGovernor",
  "ProtocolParameters",
  "ModelRegistry",
];
const BUILD = path.join(__dirname, "build");

const solc = require(path.join(NODE_MODULES, "solc"));

const SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: "ipfs" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

let used = new Map();

function read(sourceName) {
  const file = sourceName.startsWith("@") ? path.join(NODE_MODULES, sourceName) : path.join(ROOT, sourceName);
  const content = fs.readFileSync(file, "utf8");
  used.set(sourceName, content);
  return content;
}

function findImports(sourceName) {
  // only package imports and our own contracts (imported as "./Name.sol") are allowed: a relative path outside the
  // repository would make the build depend on where it runs
  const ours = /^ledger\/contracts\/[A-Za-z0-9]+\.sol$/.test(sourceName);
  if (!sourceName.startsWith("@openzeppelin/") && !ours) {
    return { error: `import ${sourceName} is not under @openzeppelin/ or ledger/contracts/` };
  }
  try {
    return { contents: read(sourceName) };
  } catch (e) {
    return { error: `cannot read ${sourceName}: ${e.message}` };
  }
}

function sorted(value) {
  if (Array.isArray(value)) return value.map(sorted);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((key) => [key, sorted(value[key])]),
    );
  }
  return value;
}

function compile(CONTRACT) {
  const SOURCE_NAME = `ledger/contracts/${CONTRACT}.sol`;
  used = new Map();
  const input = { language: "Solidity", sources: { [SOURCE_NAME]: { content: read(SOURCE_NAME) } }, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length) throw new Error(`solc reported ${errors.length} error(s)`);

  const contract = output.contracts[SOURCE_NAME][CONTRACT];
  const sources = {};
  for (const [name, content] of used) {
    sources[name] = { sha256: crypto.createHash("sha256").update(content, "utf8").digest("hex") };
  }
  const { outputSelection, ...settings } = SETTINGS;
  const artifact = {
    abi: contract.abi,
    bytecode: "0x" + contract.evm.bytecode.object,
    compiler: { name: "solc", version: solc.version() },
    contractName: CONTRACT,
    deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
    settings,
    sourceName: SOURCE_NAME,
    sources,
  };
  return JSON.stringify(sorted(artifact), null, 2) + "\n";
}

function main() {
  if (process.argv.includes("--stdout")) {
    process.stdout.write(JSON.stringify(Object.fromEntries(CONTRACTS.map((name) => [name, compile(name)]))));
    return;
  }
  fs.mkdirSync(BUILD, { recursive: true });
  for (const name of CONTRACTS) {
    const out = path.join(BUILD, `${name}.json`);
    fs.writeFileSync(out, compile(name));
    process.stdout.write(`wrote ${path.relative(ROOT, out)}\n`);
  }
}

main();

#!/usr/bin/env node
// npm run verify -- --site URL --rpc URL [--registry ADDRESS] [--distributor ADDRESS] [ARTIFACT URL...]
//
// Checks what a site publishes against the chain, with public packages only (ethers, canonicalize,
// @openzeppelin/merkle-tree) and nothing of the site's code. Exit 0: every check passed; 1: something does not
// match; 2: bad usage, or the site or the RPC could not be reached. See docs/proofs.md.
import { parseArgs } from "node:util";

import { Chain } from "./lib/chain.js";
import { runCli } from "./lib/cli.js";
import { checkEpoch } from "./lib/checks/epochs.js";
import { once } from "./lib/checks/guard.js";
import { checkReceiptList } from "./lib/checks/receipts.js";
import { checkRun } from "./lib/checks/runs.js";
import { checkChainApi, checkSite } from "./lib/checks/site.js";
import { checkRecord, checkSnapshot } from "./lib/checks/snapshots.js";
import { checkVersion } from "./lib/checks/versions.js";
import { Site, UsageError } from "./lib/http.js";
import { Report } from "./lib/report.js";

const USAGE = `usage: npm run verify -- --rpc URL (--site URL | ARTIFACT_URL...) [ARTIFACT_URL...]
    [--registry ADDRESS] [--distributor ADDRESS]
  --site URL      check everything public on the site (snapshots, receipts, versions, epochs and their runs)
  --rpc URL       an Ethereum JSON-RPC endpoint of the site's chain
  --registry, --distributor   pin the contract addresses instead of taking the site's GET /api/chain/
  ARTIFACT_URL    a run link, a version, a snapshot, a record proof, a receipt list or an epoch (page or API URL)`;

const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
// Page and API routes of each artifact, as [pattern, check].
const ROUTES = [
  [new RegExp(`/runs/(${UUID})/`), (ctx, m) => checkRun(ctx, m[1])],
  [/\/versions\/(\d+)\//, (ctx, m) => checkVersion(ctx, Number(m[1]))],
  [/\/datanets\/([\w-]+)\/snapshots\/(\d+)\/(?:records\/|proofs\/)(\d+)/, (ctx, m) => checkRecord(ctx, m[1], +m[2], +m[3])],
  [/\/datanets\/([\w-]+)\/snapshots\/(\d+)\//, (ctx, m) => checkSnapshot(ctx, m[1], Number(m[2]))],
  [
    /\/datanets\/contributions\/(\d+)\//,
    (ctx, m) => checkReceiptList(ctx, `/api/datanets/contributions/${m[1]}/receipts/`, `contribution ${m[1]}`),
  ],
  [/\/api\/datanets\/([\w-]+)\/receipts\//, (ctx, m) => checkReceiptList(ctx, m[0], `datanet ${m[1]}`)],
  [/\/epochs\/(\d+)\//, (ctx, m) => checkEpoch(ctx, Number(m[1]))],
];

function parse(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        site: { type: "string" },
        rpc: { type: "string" },
        registry: { type: "string" },
        distributor: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new UsageError(e.message);
  }
  const { values, positionals } = parsed;
  if (values.help) throw new UsageError("");
  if (!values.rpc) throw new UsageError("--rpc is required");
  if (!values.site && positionals.length === 0) throw new UsageError("give --site or at least one artifact URL");
  for (const url of [values.site, ...positionals].filter(Boolean)) {
    if (!URL.canParse(url)) throw new UsageError(`not a URL: ${url}`);
  }
  for (const url of positionals) {
    if (!ROUTES.some(([pattern]) => pattern.test(new URL(url).pathname))) {
      throw new UsageError(`not an artifact URL this verifier knows: ${url}`);
    }
  }
  return { ...values, artifacts: positionals };
}

async function main(argv) {
  const options = parse(argv);
  const report = new Report();
  const site = new Site(options.site ?? options.artifacts[0]);
  const chain = await Chain.connect(options.rpc);
  const ctx = { site, chain, report, done: new Map(), snapshotLines: [], registries: new Set(), distributors: new Set() };
  await once(ctx, "chain", "chain", () => checkChainApi(ctx, options));
  if (options.site) await checkSite(ctx);
  for (const url of options.artifacts) {
    const path = new URL(url).pathname;
    const [pattern, check] = ROUTES.find(([p]) => p.test(path));
    await check(ctx, path.match(pattern));
  }
  process.stdout.write(report.summary());
  return report.counts.FAIL === 0 ? 0 : 1;
}

runCli(main, USAGE);

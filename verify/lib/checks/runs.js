// An inference run, by its link: its facts rehashed from the fields served, its batch proof, its model version.
import { checkAnchor, checkOnChainProof } from "../anchor.js";
import { hashDocument, sameJson } from "../documents.js";
import { checkEnvelope } from "../proofs.js";
import { once } from "./guard.js";
import { checkVersion } from "./versions.js";

// What the run page shows that the hashed facts also hold: shown and hashed must be the same.
const SHOWN = ["prompt", "messages", "options", "answer", "status", "finish_reason", "error"];

/** Check run `publicId` (once); resolves to its run hash as rebuilt here, or undefined. */
export function checkRun(ctx, publicId) {
  const where = `run ${publicId}`;
  return once(ctx, `run ${publicId}`, where, async () => {
    const { site, report } = ctx;
    const run = await site.json(`/api/runs/${publicId}/`);
    // servers from before the document field gave the facts only as their stored text
    const text = run.document_text ?? run.facts;
    const document = run.document ?? (typeof text === "string" ? JSON.parse(text) : undefined);
    if (!report.check(document && typeof document === "object", where, "facts served as an object", typeof document)) {
      return undefined;
    }
    const hashed = hashDocument({ document, text });
    if (!report.check(hashed.hash, where, "facts hashed", hashed.problem)) return undefined;
    report.same(run.document_hash ?? run.run_hash, hashed.hash, where, `run hash (${hashed.how})`);
    if (run.facts_schema !== undefined) report.same(run.facts_schema, document.schema, where, "facts schema");
    report.same(document.run, publicId, where, "facts name this run");
    if (document.schema !== "openledger.inference_run.v1") {
      report.same(document.schema, "openledger.inference_run.v2", where, "facts schema is v2");
      report.check(
        document.seed === null || typeof document.seed === "string",
        where,
        "facts seed is a decimal string",
        typeof document.seed,
      );
    }
    for (const key of SHOWN) {
      if (run[key] === undefined || document[key] === undefined) continue;
      report.check(sameJson(run[key], document[key]), where, `shown ${key} is the hashed one`, "differs");
    }
    const versionId = document.model?.version;
    if (versionId !== null && versionId !== undefined) {
      const manifestHash = await checkVersion(ctx, versionId);
      report.same(document.model.manifest_hash, manifestHash, where, `model is version ${versionId}'s anchored manifest`);
    }
    // the envelope is `proof`; servers from before it named it `batch`
    const envelope = run.proof ?? (run.batch?.schema ? run.batch : null);
    if (!envelope) {
      report.wait(where, "proof", "its batch is not anchored yet");
      return hashed.hash;
    }
    const held = checkEnvelope(report, where, envelope, { artifact: "run", encoding: ["bytes32"], value: [hashed.hash] });
    if (held) {
      await checkOnChainProof(ctx, where, { anchor: envelope.anchor, ...held });
      await checkAnchor(ctx, where, {
        anchor: envelope.anchor,
        root: held.root,
        kind: "inference_batch",
        subject: `inference_batch:${held.root}`,
      });
    }
    return hashed.hash;
  });
}

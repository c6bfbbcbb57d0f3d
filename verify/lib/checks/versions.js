// A model version: its manifest rehashed, its adapter files downloaded and hashed, its parents and anchor checked.
import { checkAnchor } from "../anchor.js";
import { KIND_CODES } from "../chain.js";
import { hashDocument, sameJson, sha256Hex } from "../documents.js";
import { once } from "./guard.js";

/** Check version `id` (once); resolves to its manifest hash as rebuilt here, or undefined. */
export function checkVersion(ctx, id) {
  const where = `version ${id}`;
  return once(ctx, `version ${id}`, where, async () => {
    const { site, report } = ctx;
    const version = await site.json(`/api/modelfactory/versions/${id}/`);
    const bytes = await site.bytes(version.manifest_url ?? `/api/modelfactory/versions/${id}/manifest/`);
    const text = new TextDecoder().decode(bytes);
    const manifest = JSON.parse(text);
    const hashed = hashDocument({ document: manifest, text });
    if (!report.check(hashed.hash, where, "manifest hashed", hashed.problem)) return undefined;
    report.same(version.manifest_hash, hashed.hash, where, `manifest hash (${hashed.how})`);
    const v2 = manifest.schema !== "openledger.model_version.v1";
    if (v2) {
      report.same(manifest.schema, "openledger.model_version.v2", where, "manifest schema");
      report.check(typeof manifest.seed === "string", where, "manifest seed is a decimal string", typeof manifest.seed);
    }

    const jobId = manifest.job?.id ?? version.job_id;
    report.same(version.job_id, jobId, where, "job id is the manifest's");
    await checkAdapter(ctx, where, version, manifest, v2);
    await checkParents(ctx, where, version, manifest);
    for (const s of manifest.snapshots ?? []) {
      const info = await ctx.chain.rootInfo(ctx.registry, s.merkle_root);
      report.check(
        info.blockNumber > 0n && Number(info.kind) === KIND_CODES.snapshot,
        where,
        `training snapshot ${s.datanet}#${s.number}'s root is anchored as a snapshot`,
        `rootInfo kind ${info.kind}, block ${info.blockNumber}`,
      );
    }
    await checkAnchor(ctx, where, {
      anchor: version.anchor,
      root: hashed.hash,
      kind: "model_version",
      subject: `model_version:${jobId}`,
    });
    return hashed.hash;
  });
}

async function checkAdapter(ctx, where, version, manifest, v2) {
  const { site, report } = ctx;
  const served = new Map((version.adapter_files ?? []).map((f) => [f.name, f]));
  const listed = v2
    ? (manifest.adapter?.files ?? [])
    : [{ name: "adapter_model.safetensors", sha256: manifest.adapter_sha256 }];
  if (!report.check(listed.length > 0, where, "manifest lists the adapter's files", "none")) return;
  if (v2) {
    const names = listed.map((f) => f.name);
    report.check(
      names.includes("adapter_config.json") && names.some((n) => n.endsWith(".safetensors")),
      where,
      "manifest hashes the weights and adapter_config.json",
      names.join(", "),
    );
    const total = listed.reduce((sum, f) => sum + Number(f.bytes), 0);
    report.same(manifest.adapter?.bytes, total, where, "manifest adapter bytes = sum of its files");
    report.same(version.adapter_bytes, total, where, "adapter_bytes = sum of the manifest's files");
    report.check(
      sameJson([...served.keys()].sort(), [...names].sort()),
      where,
      "the API lists the manifest's adapter files",
      [...served.keys()].join(", "),
    );
  }
  for (const file of listed) {
    const entry = served.get(file.name);
    if (!report.check(entry?.url, where, `adapter file ${file.name} has a download URL`, "none")) continue;
    const bytes = await site.bytes(entry.url);
    report.same(file.sha256, sha256Hex(bytes), where, `adapter file ${file.name} sha256 is the manifest's`);
    if (file.bytes !== undefined) report.same(file.bytes, bytes.length, where, `adapter file ${file.name} size`);
  }
}

async function checkParents(ctx, where, version, manifest) {
  const parents = manifest.parents ?? [];
  const listed = (version.parents ?? []).map((p) => [Number(p.id), String(p.manifest_hash).toLowerCase()]);
  const inManifest = parents.map((p) => [Number(p.id), String(p.manifest_hash).toLowerCase()]);
  if (version.parents !== undefined) {
    ctx.report.check(
      sameJson(listed.sort(), [...inManifest].sort()),
      where,
      "the API's parents are the manifest's",
      JSON.stringify(listed),
    );
  }
  for (const parent of parents) {
    const rebuilt = await checkVersion(ctx, parent.id);
    ctx.report.same(
      parent.manifest_hash,
      rebuilt,
      where,
      `parent version ${parent.id}'s manifest hash is the one anchored for it`,
    );
  }
}

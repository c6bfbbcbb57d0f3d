import { HttpError, NetworkError } from "../http.js";

/** Run one artifact's checks once (`key` dedupes: a version is reached from a run, a parent, the site list); a
 * document the site refuses or mangles is a FAIL of that artifact, an unreachable site or chain stops everything. */
export function once(ctx, key, where, check) {
  if (!ctx.done.has(key)) {
    ctx.done.set(
      key,
      check().catch((e) => {
        if (e instanceof NetworkError) throw e;
        const what = e instanceof HttpError ? "fetch" : "check";
        ctx.report.fail(where, what, e.message);
        return undefined;
      }),
    );
  }
  return ctx.done.get(key);
}

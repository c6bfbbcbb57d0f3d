// One line per check: `ok`, `FAIL` (a mismatch: exit 1) or `wait` (not anchored yet, nothing to check against).
export class Report {
  constructor(out = process.stdout) {
    this.out = out;
    this.counts = { ok: 0, FAIL: 0, wait: 0 };
    this.artifacts = new Map(); // "kind id" -> worst outcome
  }

  line(outcome, where, what, detail) {
    this.counts[outcome] += 1;
    const worst = { ok: 0, wait: 1, FAIL: 2 };
    const previous = this.artifacts.get(where);
    if (previous === undefined || worst[outcome] > worst[previous]) this.artifacts.set(where, outcome);
    const tail = detail ? `: ${detail}` : "";
    this.out.write(`${outcome.padEnd(4)} ${where}: ${what}${tail}\n`);
  }

  ok(where, what, detail) {
    this.line("ok", where, what, detail);
  }

  fail(where, what, detail) {
    this.line("FAIL", where, what, detail);
  }

  wait(where, what, detail) {
    this.line("wait", where, what, detail);
  }

  /** ok when `passed`, else FAIL; returns `passed`. */
  check(passed, where, what, detail) {
    if (passed) this.ok(where, what);
    else this.fail(where, what, detail);
    return Boolean(passed);
  }

  /** ok when `actual` equals `expected` (compared as strings, case-insensitive for hex), else FAIL showing both. */
  same(actual, expected, where, what) {
    const norm = (v) => (typeof v === "string" && /^0x[0-9a-fA-F]*$/.test(v) ? v.toLowerCase() : String(v));
    return this.check(
      actual !== undefined && actual !== null && norm(actual) === norm(expected),
      where,
      what,
      `expected ${expected}, got ${actual}`,
    );
  }

  summary() {
    const failed = [...this.artifacts].filter(([, o]) => o === "FAIL").map(([w]) => w);
    const waiting = [...this.artifacts].filter(([, o]) => o === "wait").map(([w]) => w);
    const lines = [
      `summary: ${this.artifacts.size} artifacts, ${this.counts.ok} checks ok, ${this.counts.FAIL} failed, ` +
        `${this.counts.wait} waiting for an anchor`,
    ];
    if (failed.length) lines.push(`failed: ${failed.join("; ")}`);
    if (waiting.length) lines.push(`waiting: ${waiting.join("; ")}`);
    return lines.join("\n") + "\n";
  }
}

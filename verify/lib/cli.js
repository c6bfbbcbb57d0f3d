// How both command lines end: the exit code main returns (0 all checks pass, 1 one failed), or 2 when it could not
// check: usage errors with the usage, the expected errors (the network, ...) as one line, anything else with its stack.

import { NetworkError, UsageError } from "./http.js";

/** Runs `main` on the command line's arguments; `expected` lists the error classes, beside NetworkError, that are
 * a one-line refusal rather than a bug. */
export function runCli(main, usage, ...expected) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      if (e instanceof UsageError) {
        if (e.message) process.stderr.write(`error: ${e.message}\n`);
        process.stderr.write(`${usage}\n`);
      } else if ([NetworkError, ...expected].some((kind) => e instanceof kind)) {
        process.stderr.write(`error: ${e.message}\n`);
      } else {
        process.stderr.write(`error: ${e.stack ?? e}\n`);
      }
      process.exitCode = 2;
    },
  );
}

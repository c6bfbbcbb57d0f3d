// The verifier's own rebuilding functions, for verify/tests/test_verify_hashing.py.
// stdin: {"documents": [...], "records": [...], "v1": [{"document", "text"}...], "subjects": [...], "lines": [...]}
// stdout: {"documents": [hash...], "records": [hash...], "v1": [{hash, problem}...], "subjects": [id...],
//          "lines": {values, bad, erased}} (a snapshot JSONL's leaf values, snapshots.js)
import { leafValues } from "../lib/checks/snapshots.js";
import { documentHash, hashDocument, recordHash, subjectId } from "../lib/documents.js";

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const request = JSON.parse(input);
  process.stdout.write(
    JSON.stringify({
      documents: request.documents.map(documentHash),
      records: request.records.map(recordHash),
      v1: request.v1.map(hashDocument),
      subjects: request.subjects.map(subjectId),
      lines: leafValues(request.lines ?? []),
    }),
  );
});

// Validate an AsyncAPI document with the official parser: exit 1 on any error
// (warnings are printed, and fail too unless they are only hints).
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate.mjs <asyncapi.json>");
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(await readFile(path, "utf8"));
let failed = document === undefined;
for (const d of diagnostics) {
  const severity = DiagnosticSeverity[d.severity] ?? d.severity;
  console.log(`${severity}: ${d.code}: ${d.message} at /${d.path.join("/")}`);
  if (d.severity <= DiagnosticSeverity.Warning) failed = true;
}
if (failed) {
  console.error(`${path}: not a valid AsyncAPI document`);
  process.exit(1);
}
console.log(`${path}: valid AsyncAPI ${document.version()} (${diagnostics.length} hint(s))`);

// Builds dist/leadscore.mjs (ES module) and dist/leadscore.min.js (script tag, window.leadscore),
// and reports their minified + gzipped sizes. `--check` builds into memory and fails when the
// committed dist differs from what the source builds to (the tests load the committed dist).
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const check = process.argv.includes("--check");
const common = { bundle: true, minify: true, write: false, target: "es2018", legalComments: "none" };
const outputs = [
  ["leadscore.mjs", { ...common, entryPoints: [join(root, "src/leadscore.js")], format: "esm" }],
  ["leadscore.min.js", { ...common, entryPoints: [join(root, "src/global.js")], format: "iife" }],
];

let stale = [];
for (const [name, options] of outputs) {
  const result = await build(options);
  const code = result.outputFiles[0].text;
  const path = join(root, "dist", name);
  const gz = gzipSync(code, { level: 9 }).length;
  console.log(`${name}: ${code.length} bytes minified, ${gz} bytes gzipped`);
  if (check) {
    let committed = "";
    try {
      committed = readFileSync(path, "utf8");
    } catch (_) {
      committed = "";
    }
    if (committed !== code) stale.push(name);
  } else {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, code);
  }
}
if (stale.length) {
  console.error(`dist is stale (${stale.join(", ")}): run \`make sdk-js\` and commit sdk/js/dist`);
  process.exit(1);
}

// Bundles the tool into one file that runs on Node 20 without node_modules.

import { build } from "esbuild";
import { readFileSync, chmodSync } from "node:fs";

const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
const outfile = new URL("../dist/incus-backup.mjs", import.meta.url).pathname;

await build({
  entryPoints: [new URL("../src/bin.ts", import.meta.url).pathname],
  outfile,
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  sourcemap: false,
  legalComments: "none",
  define: { __INCUS_BACKUP_VERSION__: JSON.stringify(pkg.version) },
  banner: {
    // Bundled CommonJS dependencies call require() for Node built-ins; give them one.
    //
    // --liftoff-only: undici parses HTTP with llhttp, a WebAssembly module it compiles in every
    // process. By default V8 then recompiles its hot functions with TurboFan on other threads, which
    // cost 0.10-0.13 CPU-s per command that talks to Incus, about a quarter of a small backup's
    // 0.5 CPU-s (2026-12-07, 3 x 6 runs each way). Only the API's small answers go through llhttp
    // (backup files go through src/incus/bulk.ts), so the baseline compiler is fast enough. The
    // flag is set before any of the bundle runs, and undici compiles the module on first use.
    js: "#!/usr/bin/env node\nimport { setFlagsFromString as __ibV8Flags } from 'node:v8';\nimport { createRequire as __ibCreateRequire } from 'node:module';\n__ibV8Flags('--liftoff-only');\nconst require = __ibCreateRequire(import.meta.url);",
  },
  logLevel: "warning",
});
chmodSync(outfile, 0o755);
console.log(`built ${outfile}`);

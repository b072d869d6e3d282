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
    js: "#!/usr/bin/env node\nimport { createRequire as __ibCreateRequire } from 'node:module';\nconst require = __ibCreateRequire(import.meta.url);",
  },
  logLevel: "warning",
});
chmodSync(outfile, 0o755);
console.log(`built ${outfile}`);

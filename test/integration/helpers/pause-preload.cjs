// Test-only, never shipped: loaded into the built tool with NODE_OPTIONS=--require by
// helpers/faults.ts (`pauseAt`). It makes the tool stop dead at one file-system step, print a
// marker on stderr and wait there, so that a test can SIGKILL it at exactly that point. The
// product has no hook of its own; without IBK_TEST_PAUSE this file is not loaded at all.
//
// IBK_TEST_PAUSE is JSON: {"op": "rename", "when": "before"|"after", "match": "regexp", "nth": 1}.
// `op` is a function of node:fs/promises; `match` is tried on its string arguments joined by " -> "
// (rename(a, b) gives "a -> b"). The nth matching call pauses: before it runs, or after it
// completed. The tool's ES module imports of node:fs/promises are live bindings of Node's own
// module, which syncBuiltinESMExports updates.
"use strict";
const fsp = require("node:fs/promises");
const { writeSync } = require("node:fs");

const spec = JSON.parse(process.env.IBK_TEST_PAUSE);
const pattern = new RegExp(spec.match);
const original = fsp[spec.op];
if (typeof original !== "function") throw new Error(`IBK_TEST_PAUSE: no fs/promises.${spec.op}`);
let seen = 0;

function pause(when, text) {
  writeSync(2, `IBK-PAUSED ${when} ${spec.op} ${text}\n`);
  // Keeps the process alive: a pending promise alone does not.
  setInterval(() => {}, 1 << 30);
  return new Promise(() => {});
}

fsp[spec.op] = async function paused(...args) {
  const text = args.filter((a) => typeof a === "string").join(" -> ");
  const hit = pattern.test(text) && ++seen === (spec.nth ?? 1);
  if (hit && spec.when !== "after") return pause("before", text);
  const result = await original.apply(this, args);
  if (hit) return pause("after", text);
  return result;
};
require("node:module").syncBuiltinESMExports();

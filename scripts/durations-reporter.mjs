// A vitest reporter for scripts/test-integration.mjs: what each test file cost its group, and each
// test, written as JSON to the file $IBK_DURATIONS_OUT names when the run ends.
//
// A file's cost is its import plus all its tests and hooks (vitest's module diagnostic). The JSON
// reporter's startTime/endTime span only the first test's start to the last test's end: a file's
// beforeAll before it and afterAll after it are left out (a lab-wide setup, an image build), and
// groups balanced on those figures finished 30-65 s apart.
import { writeFileSync } from "node:fs";

export default class DurationsReporter {
  onTestRunEnd(testModules) {
    const out = process.env.IBK_DURATIONS_OUT;
    if (!out) return;
    const files = {};
    const tests = [];
    for (const m of testModules) {
      const d = m.diagnostic();
      files[m.moduleId] = (d.collectDuration + d.duration) / 1000;
      for (const t of m.children.allTests()) tests.push({ file: m.moduleId, name: t.fullName, seconds: (t.diagnostic()?.duration ?? 0) / 1000 });
    }
    writeFileSync(out, JSON.stringify({ files, tests }));
  }
}

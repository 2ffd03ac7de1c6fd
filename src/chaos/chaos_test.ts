import assert from "node:assert/strict";
import { MUTANTS } from "../shared/core_io.ts";
import { chaos, report, sha256 } from "./chaos.ts";
import { runOnce } from "./run.ts";

/**
 * Seeds whose runs once broke the promise, each fixed in the cores: kept so
 * that the fix stays (docs/reliability.md says what each found).
 */
export const REGRESSIONS = [12, 53, 136, 223, 561, 1002, 1607, 2028, 3048];

Deno.test("chaos: 500 runs with fixed seeds find no violation", () => {
  const result = chaos({ seed: 1, runs: 500 });
  assert.equal(
    result.violation,
    undefined,
    result.violation && report(result.violation),
  );
  assert.equal(result.runs, 500);
  assert.ok(result.grants > 500 * 10, `only ${result.grants} grants`);
});

Deno.test("chaos: the seeds that once found a violation find none now", () => {
  for (const seed of REGRESSIONS) {
    const r = runOnce(seed, { hash: sha256 });
    assert.equal(r.violation, undefined, `seed ${seed}: ${r.violation}`);
  }
});

for (const mutant of MUTANTS) {
  Deno.test(`chaos: the planted bug ${mutant} is found within 1,000 runs`, () => {
    const result = chaos({ seed: 1, runs: 1000, mutant });
    assert.ok(result.violation, `${mutant} not found in ${result.runs} runs`);
    // A replay of the reported seed finds the same violation.
    const again = runOnce(result.violation.seed, { hash: sha256, mutant });
    assert.equal(again.violation, result.violation.violation);
    const text = report(result.violation, mutant);
    assert.match(text, new RegExp(`seed ${result.violation.seed}`));
    assert.match(text, /faults:/);
    assert.match(
      text,
      new RegExp(`--seed ${result.violation.seed} --runs 1 --mutant ${mutant}`),
    );
    // deno-lint-ignore no-console -- how long each takes to find is the figure
    console.log(
      `${mutant}: found at run ${result.runs} (seed ${result.violation.seed})`,
    );
  });
}

import assert from "node:assert/strict";
import { makeTrace, runSim, simulate } from "../bench/sim.ts";
import { backfill } from "../src/allocator/policy.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function sim(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "bench/sim.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

Deno.test("deno task sim prints the same table for the same seed", async () => {
  const args = ["--seed", "7", "--hours", "5", "--budget", "8"];
  const [a, b, other] = await Promise.all([
    sim(args),
    sim(args),
    sim(["--seed", "8", "--hours", "5", "--budget", "8"]),
  ]);
  assert.match(a, /\| backfill \|/);
  assert.equal(a, b);
  assert.notEqual(a, other, "another seed is another trace");
});

Deno.test("simulate() never starts a backfill head later than fifo would", () => {
  for (const seed of [1, 2, 3]) {
    const options = { seed, hours: 3, budget: 16, load: 0.95 };
    const r = simulate(makeTrace(options), options.budget, backfill);
    assert.ok(r.requests > 100);
    assert.equal(r.maxHeadDelay, 0);
  }
  assert.match(runSim({ seed: 1, hours: 1, budget: 4 }), /\| 3-4 \|/);
});

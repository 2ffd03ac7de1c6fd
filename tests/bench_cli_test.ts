/**
 * Every benchmark answers `--help` (exit 0) and turns a bad flag or value
 * into one line on stderr (exit 2), never a stack trace or a run with
 * "NaN s".
 *
 * @module
 */

import assert from "node:assert/strict";

const BENCH = new URL("../bench/", import.meta.url);

async function bench(file: string, args: string[], flags: string[] = []) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--quiet",
      "--config",
      new URL("deno.json", BENCH).pathname,
      ...flags,
      new URL(file, BENCH).pathname,
      ...args,
    ],
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder();
  return {
    code: out.code,
    stdout: text.decode(out.stdout),
    stderr: text.decode(out.stderr),
  };
}

/** The benchmarks: every bench/*.ts but the private ones and the runner. */
async function benchmarks(): Promise<string[]> {
  const files: string[] = [];
  for await (const e of Deno.readDir(BENCH)) {
    if (/^[a-z][a-z_]*\.ts$/.test(e.name) && e.name !== "run.ts") {
      files.push(e.name);
    }
  }
  return files.sort();
}

Deno.test("every benchmark answers --help with its usage, exit 0", async () => {
  const files = await benchmarks();
  assert.ok(files.length >= 6, `found ${files}`);
  for (const file of files) {
    const got = await bench(file, ["--help"]);
    assert.equal(got.code, 0, `${file}: ${got.stderr}`);
    assert.match(got.stdout, /^usage: /, file);
    assert.equal(got.stderr, "", file);
  }
});

Deno.test("a benchmark's bad flag or value is one line on stderr, exit 2", async () => {
  const cases: [string, string[], RegExp, string[]?][] = [
    ["throughput.ts", ["--seconds", "abc"], /--seconds must be a number/],
    ["throughput.ts", ["--clients", "256,x"], /--clients must be an integer/],
    [
      "server_scale.ts",
      ["--builders", "0"],
      /--builders must be an integer from 1/,
    ],
    ["sim.ts", ["--hours=-1"], /--hours must be a number from 0\.01/],
    ["release_times.ts", ["--runs", "two"], /--runs must be an integer/],
    ["cli_cost.ts", ["--bogus"], /Unknown option '--bogus'/],
    // Without --expose-gc the heap cannot be measured.
    ["allocator_scale.ts", ["--quick"], /run with --v8-flags=--expose-gc/],
  ];
  for (const [file, args, reason] of cases) {
    const got = await bench(file, args);
    assert.equal(got.code, 2, `${file} ${args}: ${got.stderr}`);
    assert.match(got.stderr, reason, file);
    assert.equal(got.stderr.trimEnd().split("\n").length, 1, got.stderr);
    assert.equal(got.stdout, "", file);
  }
});

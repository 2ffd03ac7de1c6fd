/**
 * `deno task bench [--quick]`: every benchmark, each in its own process so
 * that one's heap and threads do not skew another's figures.  Tables and
 * charts land in bench/results/.
 *
 * The benchmarks have their own config and lock file (bench/deno.json,
 * bench/deno.lock), so that the packages only they use (ioredis,
 * redis-semaphore) are never fetched by `deno task test`: deno installs
 * every npm package of a lock file as soon as one is needed.
 *
 * @module
 */

const BENCHES: { file: string; flags?: string[] }[] = [
  { file: "allocator_scale.ts", flags: ["--v8-flags=--expose-gc"] },
  { file: "throughput.ts" },
  { file: "cli_cost.ts" },
  { file: "server_scale.ts" },
  { file: "release_times.ts" },
];

let failed = 0;
for (const { file, flags = [] } of BENCHES) {
  const status = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--quiet",
      "--config",
      new URL("deno.json", import.meta.url).pathname,
      ...flags,
      new URL(file, import.meta.url).pathname,
      ...Deno.args,
    ],
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  if (!status.success) failed++;
}
Deno.exitCode = failed > 0 ? 1 : 0;

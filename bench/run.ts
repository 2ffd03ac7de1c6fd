/**
 * `deno task bench [--quick]`: every benchmark, each in its own process so
 * that one's heap and threads do not skew another's figures.  Tables and
 * charts land in bench/results/.
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

/**
 * Benchmark 4, CLI cost: `sai-resource` run from source, uncontended, until
 * it exits 0; the RSS of the holder it leaves; and the same holder started
 * with V8 flags that trade speed for memory (the bench plays the parent, as
 * `holderCommand()` in src/client/client_cli.ts would with those flags).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  BuilderProc,
  holderPids,
  runArgs,
  ServerProc,
} from "../tests/_harness.ts";
import { TextLineStream } from "./_lines.ts";
import { publish, type Row } from "./_report.ts";
import { holderCommand } from "../src/client/holder.ts";
import { runBench } from "./_main.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DENO = Deno.execPath();

interface Mem {
  rss: number;
  /** Private_Clean + Private_Dirty: what one more holder really costs. */
  priv: number;
}

async function memOf(pid: number): Promise<Mem> {
  const text = await Deno.readTextFile(`/proc/${pid}/smaps_rollup`);
  const kb = (key: string) =>
    Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN) *
    1024;
  return { rss: kb("Rss"), priv: kb("Private_Clean") + kb("Private_Dirty") };
}

/** Releases a lease by cookie, as `sai-resource --release` does. */
async function release(socket: string, cookie: string): Promise<void> {
  const conn = await Deno.connect({ transport: "unix", path: socket });
  try {
    await conn.write(
      new TextEncoder().encode(
        JSON.stringify({ schema: "com-warmcat-sai-resource", cookie }),
      ),
    );
    await conn.read(new Uint8Array(512));
  } finally {
    conn.close();
  }
}

const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;

/** Time for `deno run client.ts NAME 1 60` to exit 0, and its holder's RSS. */
async function cliRun(
  socket: string,
  cookie: string,
): Promise<{ ms: number } & Mem> {
  const t = performance.now();
  const out = await new Deno.Command(DENO, {
    args: [
      ...runArgs("client.ts"),
      "r",
      "1",
      "60",
      cookie,
      "--socket",
      socket,
      "--quiet",
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ms = performance.now() - t;
  if (out.code !== 0) {
    throw new Error(
      `sai-resource exited ${out.code}: ${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
  const [pid] = await holderPids(cookie);
  const mem = pid === undefined
    ? { rss: NaN, priv: NaN }
    : await settledMem(pid);
  await release(socket, cookie);
  return { ms, ...mem };
}

/** The holder's memory once it has settled into waiting (the peak). */
async function settledMem(pid: number): Promise<Mem> {
  let max: Mem = { rss: 0, priv: 0 };
  // A benchmark sampling a process's memory: these pauses are the samples'
  // spacing, not a wait for an event.
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const m = await memOf(pid);
    if (m.rss > max.rss) max = m;
  }
  return max;
}

/** Starts a holder with V8 flags, plays its parent; grant time and RSS. */
async function holderRun(
  socket: string,
  cookie: string,
  v8flags: string,
): Promise<{ ms: number } & Mem> {
  const t = performance.now();
  const { exe, args } = holderCommand(
    ["r", "1", "60", cookie, "--socket", socket, "--wait", "60"],
    { denoFlags: v8flags ? [`--v8-flags=${v8flags}`] : [] },
  );
  const child = new Deno.Command(exe, {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream())
    .pipeThrough(new TextLineStream()).getReader();
  const writer = child.stdin.getWriter();
  try {
    for (;;) {
      const { value, done } = await lines.read();
      if (done) throw new Error("the holder exited before the grant");
      if (value.includes('"granted"')) break;
    }
    const ms = performance.now() - t;
    await writer.write(new TextEncoder().encode("ok\n"));
    return { ms, ...await settledMem(child.pid) };
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
    await lines.cancel().catch(() => {});
    await writer.close().catch(() => {});
  }
}

const FLAG_SETS: [string, string][] = [
  ["holder, default flags", ""],
  ["--max-semi-space-size=1", "--max-semi-space-size=1"],
  ["--max-old-space-size=16", "--max-old-space-size=16"],
  ["--single-threaded", "--single-threaded"],
  ["--lite-mode", "--lite-mode"],
  ["--jitless", "--jitless"],
  [
    "--single-threaded,--lite-mode,--max-semi-space-size=1",
    "--single-threaded,--lite-mode,--max-semi-space-size=1",
  ],
  [
    "--jitless,--single-threaded,--max-semi-space-size=1,--max-old-space-size=16",
    "--jitless,--single-threaded,--max-semi-space-size=1,--max-old-space-size=16",
  ],
];

/** Runs the benchmark and publishes its table. */
export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { quick: { type: "boolean" } },
  });
  const runs = values.quick ? 1 : 5;
  await using server = await ServerProc.start([
    "--resources",
    "r=1000",
    "--log-level",
    "warn",
  ]);
  await using builder = await BuilderProc.start(server, {
    args: ["--log-level", "warn"],
  });
  const rows: Row[] = [];
  const cli = [];
  for (let i = 0; i < runs; i++) {
    cli.push(await cliRun(builder.socket, `cli-${i}`));
  }
  rows.push({
    label: "sai-resource from source, to exit 0",
    values: [
      median(cli.map((r) => r.ms)),
      median(cli.map((r) => r.rss)) / 2 ** 20,
      median(cli.map((r) => r.priv)) / 2 ** 20,
    ],
  });
  for (const [label, flags] of FLAG_SETS) {
    const rs = [];
    for (let i = 0; i < runs; i++) {
      rs.push(await holderRun(builder.socket, `h-${rows.length}-${i}`, flags));
    }
    rows.push({
      label,
      values: [
        median(rs.map((r) => r.ms)),
        median(rs.map((r) => r.rss)) / 2 ** 20,
        median(rs.map((r) => r.priv)) / 2 ** 20,
      ],
    });
  }
  // Launcher mode: the lease held exactly as long as a command runs, in
  // one process.  Its overhead is its wall time less the command's own.
  const timed = async (argv: string[], env: Record<string, string> = {}) => {
    const t = performance.now();
    const out = await new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      cwd: ROOT,
      env,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(
        `${argv.join(" ")}: ${new TextDecoder().decode(out.stderr)}`,
      );
    }
    return performance.now() - t;
  };
  const bare: number[] = [];
  const launched: number[] = [];
  for (let i = 0; i < runs; i++) {
    bare.push(await timed(["true"]));
    launched.push(
      await timed([
        DENO,
        ...runArgs("client.ts"),
        "r",
        "1",
        "60",
        `launch-${i}`,
        "--quiet",
        "--",
        "true",
      ], { SAI_BUILDER_RESOURCE_PROXY: builder.socket }),
    );
  }
  rows.push({
    label: "launcher mode: sai-resource … -- true, to exit",
    values: [median(launched), "-", "-"],
  });
  rows.push({
    label: "  overhead over running true directly",
    values: [median(launched) - median(bare), "-", "-"],
  });
  await publish({
    name: "cli_cost",
    title: "CLI cost: sai-resource uncontended, and holder RSS by V8 flags",
    columns: [
      "ms (to exit 0 / to grant)",
      "holder RSS MiB",
      "holder private MiB",
    ],
    rows,
    chartColumn: 2,
    notes: [
      `Median of ${runs}. First row: the whole CLI (parent + holder spawn) until exit 0, with the RSS of the holder it left. Other rows: a holder started directly with those flags, time from spawn to grant.`,
      "Launcher rows: no holder is left behind, so there is no RSS to show; the overhead is Deno's start-up plus one lease round trip.",
    ],
  });
}

if (import.meta.main) {
  await runBench(
    main,
    "usage: deno run -A -c bench/deno.json bench/cli_cost.ts [--quick]",
  );
}

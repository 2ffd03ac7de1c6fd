/**
 * How long capacity stays held after a CI job is cancelled, ctest is killed
 * or a builder dies, per kind of lease (docs/reliability.md, "When a job
 * ends badly").  Real processes: a server, a builder, ctest -j4 running the
 * CMake module's fixtures and launcher; times are from the fault to the
 * moment the server's /api/status no longer lists the lease.
 *
 *   deno run -A -c bench/deno.json bench/release_times.ts [--quick] [--runs 5]
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  BuilderProc,
  holderPids,
  ServerProc,
  waitFor,
} from "../tests/_harness.ts";
import { percentile, publish, type Row } from "./_report.ts";
import { numberFlag, runBench } from "./_main.ts";
import {
  configure as configureProject,
  SAI_RESOURCE,
} from "../tests/_ctest.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CLIENT = SAI_RESOURCE;

/** The server's --builder-grace here: a dead builder's units idle that long. */
const BUILDER_GRACE = 10;

/**
 * Two fixture scopes (on a and b: the module takes one resource's scopes one
 * after another) and one launched test (on c): all granted.
 */
const PROJECT = `cmake_minimum_required(VERSION 3.16)
project(release_times NONE)
enable_testing()
include("${ROOT}cmake/SaiResource.cmake")
foreach(res a b)
  sai_resource(\${res} 1 600 scope_\${res})
  add_test(NAME \${res}.work COMMAND sleep 60)
  set_tests_properties(\${res}.work PROPERTIES FIXTURES_REQUIRED res_scope_\${res})
endforeach()
sai_resource_launcher(one c 1 600)
add_test(NAME launched COMMAND \${one} sleep 60)
`;

/** Every lease the server lists. */
async function leases(server: ServerProc) {
  return (await server.status()).resources.flatMap((r) => r.leases);
}

function env(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) => !k.startsWith("SAI_")),
  );
}

async function configure(dir: string): Promise<string> {
  await Deno.mkdir(`${dir}/src`, { recursive: true });
  await Deno.writeTextFile(`${dir}/src/CMakeLists.txt`, PROJECT);
  await configureProject(`${dir}/src`, `${dir}/build`, CLIENT);
  return `${dir}/build`;
}

type Fault = "cancel" | "kill-ctest" | "kill-builder";

/** ms from the fault until each kind of lease was gone (undefined: not within 15 s). */
interface Sample {
  fixture: number[];
  launcher: number[];
  holdersGone?: number;
}

async function once(build: string, fault: Fault): Promise<Sample> {
  await using server = await ServerProc.start([
    "--resources",
    "a=1,b=1,c=1",
    "--builder-grace",
    String(BUILDER_GRACE),
  ]);
  await using builder = await BuilderProc.start(server);
  const ctest = new Deno.Command("ctest", {
    args: ["-j4", "--test-dir", build],
    env: { ...env(), SAI_BUILDER_RESOURCE_PROXY: builder.socket },
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  const pgid = ctest.pid;
  const sample: Sample = { fixture: [], launcher: [] };
  try {
    await waitFor(
      "three leases",
      async () => (await leases(server)).length === 3,
      60_000,
    );
    // Let the fixtures' tests start: the job is in full swing.
    await waitFor("the fixture tests to run", async () => {
      const ps = await new Deno.Command("pgrep", {
        args: ["-g", String(pgid), "-f", "sleep 60"],
        stdout: "piped",
      }).output();
      return new TextDecoder().decode(ps.stdout).trim().split("\n").length >=
        3;
    }, 30_000);
    const kind = new Map(
      (await leases(server)).map((
        l,
      ) => [l.cookie, l.process ? "fixture" : "launcher"]),
    );
    const t0 = performance.now();
    if (fault === "cancel") {
      Deno.kill(-pgid, "SIGTERM");
      setTimeout(() => {
        try {
          Deno.kill(-pgid, "SIGKILL");
        } catch { /* gone */ }
      }, 1000);
    } else if (fault === "kill-ctest") {
      Deno.kill(pgid, "SIGKILL");
    } else {
      builder.kill("SIGKILL");
    }
    const left = new Set(kind.keys());
    const deadline = t0 + (BUILDER_GRACE + 15) * 1000;
    while (left.size > 0 && performance.now() < deadline) {
      const now = new Set((await leases(server)).map((l) => l.cookie));
      const at = performance.now() - t0;
      for (const cookie of [...left]) {
        if (now.has(cookie)) continue;
        left.delete(cookie);
        sample[kind.get(cookie) as "fixture" | "launcher"].push(at);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const holders = async () =>
      (await holderPids("", { socket: builder.socket })).length === 0;
    if (left.size === 0) {
      await waitFor("no holder", holders, 15_000).catch(() => {});
      if (await holders()) sample.holdersGone = performance.now() - t0;
    }
  } finally {
    try {
      Deno.kill(-pgid, "SIGKILL");
    } catch { /* gone */ }
    await ctest.status;
  }
  return sample;
}

/** Runs the benchmark and publishes its table. */
export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { runs: { type: "string" }, quick: { type: "boolean" } },
  });
  const RUNS = numberFlag("--runs", values.runs, {
    fallback: values.quick ? 2 : 5,
    min: 1,
    max: 100,
  });
  const dir = await Deno.makeTempDir({ prefix: "sai-release-times-" });
  const rows: Row[] = [];
  try {
    const build = await configure(dir);
    const faults: [Fault, string][] = [
      ["cancel", "job cancelled (SIGTERM to its group, SIGKILL 1 s later)"],
      ["kill-ctest", "ctest alone killed (SIGKILL)"],
      [
        "kill-builder",
        `builder killed (SIGKILL; server --builder-grace ${BUILDER_GRACE})`,
      ],
    ];
    for (const [fault, label] of faults) {
      const all: Sample[] = [];
      for (let i = 0; i < RUNS; i++) all.push(await once(build, fault));
      const col = (xs: number[], expected: number) =>
        xs.length < expected
          ? `${expected - xs.length} of ${expected} still held after ${
            BUILDER_GRACE + 15
          } s`
          : Math.round(percentile([...xs].sort((a, b) => a - b), 0.5));
      const fixture = all.flatMap((s) => s.fixture);
      const launcher = all.flatMap((s) => s.launcher);
      const gone = all.flatMap((s) => s.holdersGone ?? []);
      rows.push({
        label,
        values: [
          col(fixture, 2 * RUNS),
          fixture.length ? Math.round(Math.max(...fixture)) : "-",
          col(launcher, RUNS),
          gone.length === RUNS ? Math.round(Math.max(...gone)) : "-",
        ],
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }

  await publish({
    name: "release_times",
    title:
      `Capacity held after a fault, ms (${RUNS} runs; ctest -j4, 2 fixtures + 1 launched test)`,
    columns: [
      "fixture holder: median",
      "fixture holder: max",
      "launcher: median",
      "no holder left: max",
    ],
    rows,
    notes: [
      "From the fault to the moment /api/status no longer lists the lease (polled every 5 ms).",
      "A holder with --no-owner, or whose owner it cannot see, keeps its lease until LEASE ends in the first two rows.",
    ],
  });
}

if (import.meta.main) {
  await runBench(
    main,
    "usage: deno run -A -c bench/deno.json bench/release_times.ts [--quick] [--runs N]",
  );
}

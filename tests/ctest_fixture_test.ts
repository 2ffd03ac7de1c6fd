/**
 * The fixture style of cmake/SaiResource.cmake cannot deadlock: budget 1,
 * three scopes of two tests each (one scope declared in two directories),
 * and `ctest -j1`, `-j2` and `-j8` all finish in a few seconds, far below
 * the lease that a stalled run would wait out.
 *
 * @module
 */

import assert from "node:assert/strict";
import { BuilderProc, ServerProc, waitFor } from "./_harness.ts";
import { configure, HAVE_CMAKE, peakInUse, run, SKIP } from "./_ctest.ts";

const MODULE = new URL("../cmake/SaiResource.cmake", import.meta.url).pathname;
/** Long enough that a run waiting for an expiry could not pass. */
const LEASE = 120;
/** A run that takes longer than this waited for something it should not. */
const FAST_MS = LEASE * 1000 / 2;
const SCOPES = ["s1", "s2", "s3"];

/**
 * Scopes s1 and s2 here; s3 here and in sub/, one lease for both.  The
 * scopes are declared before their tests, so `ctest -j1` (which keeps that
 * order) starts s2's setup before s1's tests.
 */
const TOP = `cmake_minimum_required(VERSION 3.16)
project(fixtures NONE)
enable_testing()
include("${MODULE}")
set(work /bin/sh "\${CMAKE_CURRENT_SOURCE_DIR}/work.sh" "\${CMAKE_BINARY_DIR}/times.txt")
sai_resource(r 1 ${LEASE} s1 WAIT 100)
sai_resource(r 1 ${LEASE} s2 WAIT 100)
foreach(s IN ITEMS s1 s2)
  foreach(i IN ITEMS 1 2)
    add_test(NAME \${s}.\${i} COMMAND \${work} \${s}.\${i})
    set_tests_properties(\${s}.\${i} PROPERTIES FIXTURES_REQUIRED res_\${s})
  endforeach()
endforeach()
sai_resource(r 1 ${LEASE} s3 WAIT 100)
add_test(NAME s3.1 COMMAND \${work} s3.1)
set_tests_properties(s3.1 PROPERTIES FIXTURES_REQUIRED res_s3)
add_subdirectory(sub)
`;

const SUB = `sai_resource(r 1 ${LEASE} s3 WAIT 100)
add_test(NAME s3.2 COMMAND \${work} s3.2)
set_tests_properties(s3.2 PROPERTIES FIXTURES_REQUIRED res_s3)
`;

/** Each test: 0.2 s of work, its start and end in times.txt. */
const WORK = `ms() { date +%s%3N; }
echo "$2 start $(ms)" >> "$1"
sleep 0.2
echo "$2 end $(ms)" >> "$1"
`;

/** The span of each scope's tests, from times.txt. */
async function scopeSpans(
  file: string,
): Promise<Map<string, { start: number; end: number }>> {
  const spans = new Map<string, { start: number; end: number }>();
  let lines = 0;
  for (const line of (await Deno.readTextFile(file)).split("\n")) {
    if (!line) continue;
    lines++;
    const [test, , ms] = line.split(" ") as [string, string, string];
    const scope = test.split(".")[0]!;
    const span = spans.get(scope) ?? { start: Infinity, end: -Infinity };
    span.start = Math.min(span.start, Number(ms));
    span.end = Math.max(span.end, Number(ms));
    spans.set(scope, span);
  }
  assert.equal(lines, 2 * 2 * SCOPES.length, `every test ran once: ${file}`);
  return spans;
}

Deno.test({
  name:
    `sai_resource() fixtures, budget 1, three scopes: ctest -j1, -j2 and -j8 finish without waiting for an expiry${SKIP}`,
  ignore: !HAVE_CMAKE,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sai-fixture-" });
    const farms: { server: ServerProc; builder: BuilderProc }[] = [];
    try {
      await Deno.mkdir(`${dir}/src/sub`, { recursive: true });
      await Deno.writeTextFile(`${dir}/src/CMakeLists.txt`, TOP);
      await Deno.writeTextFile(`${dir}/src/sub/CMakeLists.txt`, SUB);
      await Deno.writeTextFile(`${dir}/src/work.sh`, WORK);
      const jobs = ["-j1", "-j2", "-j8"];
      // One farm (server with r=1, builder) per run: each run alone must
      // not deadlock.
      for (const _ of jobs) {
        const server = await ServerProc.start(["--resources", "r=1"]);
        farms.push({ server, builder: await BuilderProc.start(server) });
      }
      const runs = await Promise.all(jobs.map(async (j, i) => {
        const build = `${dir}/build${j}`;
        await configure(`${dir}/src`, build);
        const got = await run("ctest", [j, "--output-on-failure"], {
          cwd: build,
          env: { SAI_BUILDER_RESOURCE_PROXY: farms[i]!.builder.socket },
          // A deadlocked run would wait LEASE seconds: stop it well before.
          timeoutMs: FAST_MS + 20_000,
        });
        return { j, build, ...got };
      }));
      for (const [i, r] of runs.entries()) {
        assert.equal(r.code, 0, `ctest ${r.j}:\n${r.out}`);
        assert.match(r.out, /100% tests passed, 0 tests failed out of 12/);
        assert.ok(
          r.ms < FAST_MS,
          `ctest ${r.j} took ${Math.round(r.ms)} ms: it waited for something`,
        );
        const { server } = farms[i]!;
        await waitFor("the last lease to be released", async () => {
          const res = await server.resource("r");
          return res.allocated === 0 && res.queuedRequests === 0;
        }, 5_000);
        const { stats } = await server.status();
        // One lease per scope (s3's two directories share one), all
        // released by their cleanup tests, none expired.
        assert.equal(stats.grants, SCOPES.length, `ctest ${r.j}`);
        assert.equal(stats.expiries, 0, `ctest ${r.j}`);
        // Budget 1: no two scopes' tests ever ran at the same time.
        const spans = await scopeSpans(`${r.build}/times.txt`);
        assert.deepEqual([...spans.keys()].sort(), SCOPES);
        assert.equal(
          peakInUse([...spans.values()].map((s) => ({ ...s, weight: 1 }))),
          1,
          `ctest ${r.j}: scopes overlapped ${JSON.stringify([...spans])}`,
        );
      }
    } finally {
      for (const { server, builder } of farms) {
        await builder[Symbol.asyncDispose]();
        await server[Symbol.asyncDispose]();
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    `sai_resource() declared again: another NAME is a configure error, another AMOUNT a warning${SKIP}`,
  ignore: !HAVE_CMAKE,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sai-fixture-" });
    try {
      await Deno.mkdir(`${dir}/src/sub`, { recursive: true });
      await Deno.writeTextFile(`${dir}/src/CMakeLists.txt`, TOP);
      const configure = async (sub: string) => {
        await Deno.writeTextFile(`${dir}/src/sub/CMakeLists.txt`, sub);
        await Deno.remove(`${dir}/b`, { recursive: true }).catch(() => {});
        return await run("cmake", ["-S", `${dir}/src`, "-B", `${dir}/b`], {
          cwd: dir,
          env: { PATH: "/usr/bin:/bin" },
        });
      };
      const other = await configure(
        SUB.replace("sai_resource(r ", "sai_resource(q "),
      );
      assert.notEqual(other.code, 0);
      assert.match(other.out, /SCOPE "s3" is declared\s+again for NAME "q"/);
      const more = await configure(
        SUB.replace("sai_resource(r 1", "sai_resource(r 2"),
      );
      assert.equal(more.code, 0, more.out);
      assert.match(more.out, /the first\s+declaration's r, 1, 120 holds/);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    `sai_resource() fixtures of two resources: a test may require both, with no cycle and no wait for an expiry${SKIP}`,
  ignore: !HAVE_CMAKE,
  async fn() {
    await using server = await ServerProc.start(["--resources", "r=1,q=1"]);
    await using builder = await BuilderProc.start(server);
    const dir = await Deno.makeTempDir({ prefix: "sai-fixture-" });
    try {
      await Deno.mkdir(`${dir}/src`, { recursive: true });
      await Deno.writeTextFile(
        `${dir}/src/CMakeLists.txt`,
        `cmake_minimum_required(VERSION 3.16)
project(two NONE)
enable_testing()
include("${MODULE}")
set(work /bin/sh "\${CMAKE_CURRENT_SOURCE_DIR}/work.sh" "\${CMAKE_BINARY_DIR}/times.txt")
sai_resource(r 1 ${LEASE} a WAIT 100)
sai_resource(r 1 ${LEASE} c WAIT 100)
sai_resource(q 1 ${LEASE} b WAIT 100)
add_test(NAME ab.1 COMMAND \${work} ab.1)
set_tests_properties(ab.1 PROPERTIES FIXTURES_REQUIRED "res_a;res_b")
add_test(NAME c.1 COMMAND \${work} c.1)
set_tests_properties(c.1 PROPERTIES FIXTURES_REQUIRED res_c)
`,
      );
      await Deno.writeTextFile(`${dir}/src/work.sh`, WORK);
      const build = `${dir}/build`;
      await configure(`${dir}/src`, build);
      // A farm may still export SAI_RESOURCE_FOREGROUND=1 for upstream's
      // macro, as these docs once advised: the module's setups detach all
      // the same, or they would hold ctest until their timeout.
      const runs: [string, Record<string, string>][] = [
        ["-j1", {}],
        ["-j2", {}],
        ["-j2", { SAI_RESOURCE_FOREGROUND: "1" }],
      ];
      for (const [j, extra] of runs) {
        const got = await run("ctest", [j, "--output-on-failure"], {
          cwd: build,
          env: { SAI_BUILDER_RESOURCE_PROXY: builder.socket, ...extra },
          timeoutMs: FAST_MS + 20_000,
        });
        assert.equal(got.code, 0, `ctest ${j}:\n${got.out}`);
        assert.match(got.out, /100% tests passed, 0 tests failed out of 8/);
        assert.ok(got.ms < FAST_MS, `ctest ${j} took ${Math.round(got.ms)} ms`);
      }
      await waitFor("the last lease to be released", async () => {
        const doc = await server.status();
        return doc.resources.every((r) => r.allocated === 0);
      }, 5_000);
      const { stats } = await server.status();
      assert.equal(stats.grants, runs.length * 3);
      assert.equal(stats.expiries, 0);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

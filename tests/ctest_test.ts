/**
 * cmake/SaiResource.cmake under real cmake and ctest: two `ctest -j8` runs on
 * two builders share one server's budget of 2.
 *
 * @module
 */

import assert from "node:assert/strict";
import { BuilderProc, holderPids, ServerProc, waitFor } from "./_harness.ts";
import { acquire } from "../src/client/lease_client.ts";
import {
  configure as configureCmake,
  HAVE_CMAKE,
  type Held,
  peakInUse,
  run,
  SAI_RESOURCE,
  SKIP,
} from "./_ctest.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MODULE = `${ROOT}cmake/SaiResource.cmake`;

const LAUNCHED = 6;
const GROUPED = 4;

/**
 * A project with LAUNCHED tests behind the launcher (one unit each) and
 * GROUPED tests sharing the fixture scope "grp" (one unit for all of them).
 * Each test appends "NAME start MS" and "NAME end MS" to times.txt in the
 * build tree, holding the resource for 300 ms in between.
 */
function project(wait: number): string {
  return `cmake_minimum_required(VERSION 3.16)
project(gate NONE)
enable_testing()
include("${MODULE}")
set(work /bin/sh "\${CMAKE_CURRENT_SOURCE_DIR}/work.sh" "\${CMAKE_BINARY_DIR}/times.txt")
sai_resource_launcher(one r 1 60 WAIT ${wait})
foreach(i RANGE 1 ${LAUNCHED})
  add_test(NAME launched.\${i} COMMAND \${one} \${work} launched.\${i})
endforeach()
sai_resource(r 1 60 grp WAIT ${wait})
foreach(i RANGE 1 ${GROUPED})
  add_test(NAME grouped.\${i} COMMAND \${work} grouped.\${i})
  set_tests_properties(grouped.\${i} PROPERTIES FIXTURES_REQUIRED res_grp)
endforeach()
`;
}

const WORK = `ms() { date +%s%3N; }
echo "$2 start $(ms)" >> "$1"
sleep 0.3
echo "$2 end $(ms)" >> "$1"
`;

/** Writes the project and configures a build tree; returns its path. */
async function configure(
  dir: string,
  name: string,
  command: string[] | undefined,
  wait = 120,
): Promise<string> {
  const src = `${dir}/src`;
  await Deno.mkdir(src, { recursive: true });
  await Deno.writeTextFile(`${src}/CMakeLists.txt`, project(wait));
  await Deno.writeTextFile(`${src}/work.sh`, WORK);
  const build = `${dir}/${name}`;
  await configureCmake(src, build, command ?? []);
  return build;
}

/**
 * Reads a run's times.txt: each launched test held one unit while it ran;
 * the fixture's one lease covered at least its tests' whole span.
 */
async function heldIntervals(file: string): Promise<Held[]> {
  const spans = new Map<string, { start?: number; end?: number }>();
  for (const line of (await Deno.readTextFile(file)).split("\n")) {
    if (!line) continue;
    const [test, what, ms] = line.split(" ") as [string, string, string];
    const span = spans.get(test) ?? {};
    span[what as "start" | "end"] = Number(ms);
    spans.set(test, span);
  }
  assert.equal(spans.size, LAUNCHED + GROUPED, `every test ran: ${file}`);
  const held: Held[] = [];
  let group: Held | undefined;
  for (const [test, { start, end }] of spans) {
    assert.ok(start && end && start <= end, `${test} recorded both ends`);
    if (test.startsWith("launched.")) {
      held.push({ start, end, weight: 1 });
    } else {
      group = {
        start: Math.min(group?.start ?? start, start),
        end: Math.max(group?.end ?? end, end),
        weight: 1,
      };
    }
  }
  return [...held, group!];
}

Deno.test("peakInUse() counts overlapping intervals, end before start at a tie", () => {
  assert.equal(peakInUse([]), 0);
  assert.equal(
    peakInUse([{ start: 0, end: 10, weight: 1 }, {
      start: 10,
      end: 20,
      weight: 1,
    }]),
    1,
  );
  assert.equal(
    peakInUse([
      { start: 0, end: 10, weight: 1 },
      { start: 5, end: 15, weight: 1 },
      { start: 9, end: 12, weight: 2 },
    ]),
    4,
  );
});

Deno.test({
  name:
    `two ctest -j8 runs on two builders never hold more than the budget of 2${SKIP}`,
  ignore: !HAVE_CMAKE,
  async fn() {
    await using server = await ServerProc.start(["--resources", "r=2"]);
    await using b1 = await BuilderProc.start(server, { name: "b1" });
    await using b2 = await BuilderProc.start(server, { name: "b2" });
    const dir = await Deno.makeTempDir({ prefix: "sai-ctest-" });
    try {
      const builds = [
        await configure(dir, "a", SAI_RESOURCE),
        await configure(dir, "b", SAI_RESOURCE),
      ];
      const runs = await Promise.all(
        [[builds[0]!, b1, "gateA."], [builds[1]!, b2, "gateB."]].map(
          ([build, builder, prefix]) =>
            run("ctest", ["-j8", "--output-on-failure", "--timeout", "120"], {
              cwd: build as string,
              env: {
                SAI_BUILDER_RESOURCE_PROXY: (builder as BuilderProc).socket,
                SAI_RESOURCE_COOKIE_PREFIX: prefix as string,
              },
            }),
        ),
      );
      for (const r of runs) {
        assert.equal(r.code, 0, r.out);
        assert.match(r.out, /100% tests passed, 0 tests failed out of 12/);
      }

      const intervals = [
        ...await heldIntervals(`${builds[0]}/times.txt`),
        ...await heldIntervals(`${builds[1]}/times.txt`),
      ];
      const peak = peakInUse(intervals);
      assert.ok(peak <= 2, `at most 2 held at once, saw ${peak}`);

      // Every test really went through the server: one lease per launched
      // test, one per fixture scope, and the fixture cookie is
      // PREFIX + SCOPE-<tree hash>.
      await waitFor("every lease to be released", async () => {
        const r = await server.resource("r");
        return r.allocated === 0 && r.queuedRequests === 0;
      }, 5_000);
      const doc = await server.status();
      assert.equal(doc.stats.grants, 2 * (LAUNCHED + 1));
      assert.equal(doc.stats.expiries, 0, "released, not expired");
      const log = await Deno.readTextFile(
        `${builds[0]}/Testing/Temporary/LastTest.log`,
      );
      assert.match(log, /cookie gateA\.grp-[0-9a-f]{8}\)/);
      await waitFor(
        "no holder process to be left",
        async () =>
          (await holderPids("gate[AB]\\.", b1)).length +
              (await holderPids("gate[AB]\\.", b2)).length === 0,
        5_000,
      );

      // Outside a farm the same tree passes with no lease taken.
      const unmanaged = await run("ctest", ["-j8", "--timeout", "120"], {
        cwd: builds[0]!,
      });
      assert.equal(unmanaged.code, 0, unmanaged.out);
      assert.equal((await server.status()).stats.grants, 2 * (LAUNCHED + 1));
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    `without sai-resource the module passes outside a farm and fails inside one${SKIP}`,
  ignore: !HAVE_CMAKE,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sai-ctest-" });
    try {
      const build = await configure(dir, "bare", undefined);
      const outside = await run("ctest", ["-j8", "--output-on-failure"], {
        cwd: build,
      });
      assert.equal(outside.code, 0, outside.out);
      assert.match(outside.out, /100% tests passed/);

      const inside = await run("ctest", ["-j8", "--output-on-failure"], {
        cwd: build,
        env: { SAI_BUILDER_RESOURCE_PROXY: `${dir}/b.sock` },
      });
      assert.notEqual(inside.code, 0);
      assert.match(inside.out, /sai-resource was not found/);
      // The launched tests and the fixture's setup fail; so do its tests.
      assert.match(inside.out, /0% tests passed, 12 tests failed out of 12/);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    `a lease that times out fails the tests without running them and leaves nothing queued${SKIP}`,
  ignore: !HAVE_CMAKE,
  async fn() {
    await using server = await ServerProc.start(["--resources", "r=1"]);
    await using builder = await BuilderProc.start(server);
    const dir = await Deno.makeTempDir({ prefix: "sai-ctest-" });
    // Hold the whole budget for the length of the test.
    const owner = await acquire(builder.socket, {
      resname: "r",
      amount: 1,
      lease: 600,
      cookie: "owner",
    });
    try {
      const build = await configure(dir, "late", SAI_RESOURCE, 1);
      const got = await run("ctest", ["-j8", "--output-on-failure"], {
        cwd: build,
        env: {
          SAI_BUILDER_RESOURCE_PROXY: builder.socket,
          SAI_RESOURCE_COOKIE_PREFIX: "late.",
        },
      });
      assert.notEqual(got.code, 0);
      assert.match(got.out, /0% tests passed, 12 tests failed out of 12/);
      assert.match(got.out, /timed out waiting; the request was withdrawn/);
      assert.match(got.out, /grouped\.1 \.+\*+Not Run/);
      assert.match(got.out, /no lease with cookie "late\.grp-[0-9a-f]{8}"/);
      assert.equal(
        await Deno.stat(`${build}/times.txt`).then(() => true, () => false),
        false,
        "no test body ran",
      );
      await waitFor(
        "the queue to empty",
        async () => (await server.resource("r")).queuedRequests === 0,
        5_000,
      );
      const res = await server.resource("r");
      assert.deepEqual(res.leases.map((l) => l.cookie), ["owner"]);
      assert.equal((await holderPids("late\\.", builder)).length, 0);
    } finally {
      owner.release();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

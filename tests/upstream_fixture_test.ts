/**
 * Our `sai-resource` as a drop-in for upstream's, with no setting: a CMake
 * project that declares its fixtures as libwebsockets' macro does, run by
 * real ctest at -j1, -j2 and -j8 with `SAI_RESOURCE_FOREGROUND` unset.
 *
 * The macro, as observed: the setup test starts `sai-resource NAME AMOUNT
 * LEASE COOKIE -d1039` in the background, records `$!` and returns a second
 * later; the cleanup test fails "unexpectedly dead already" unless that PID
 * is alive, then kills it.  Every setup is declared a setup of the one
 * fixture `res_sspcmin`, each cleanup one of its own `res_<SCOPE>`, so
 * ctest does not order a scope's cleanup after its setup.  Here the scope
 * `late` has its setup run after its cleanup (a `DEPENDS`, standing in for
 * the orders ctest picks by itself, such as a previous run's failed
 * cleanups first): the cleanup finds no PID file and passes, as upstream's
 * does, and nothing ever signals what the setup then starts.  The stand-in
 * scripts are written from upstream's observed behaviour; no upstream code.
 *
 * @module
 */

import assert from "node:assert/strict";
import { BuilderProc, runArgs, ServerProc, waitFor } from "./_harness.ts";
import { HAVE_CMAKE, run, SKIP } from "./_ctest.ts";
import { monotonic } from "../src/shared/clock.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SCOPES = ["sspcmin", "a", "b", "late"];
/** As upstream's fixtures: one connection for 40 s. */
const LEASE = 40;

/** Upstream's macro as observed; active only when SAI_OVN is set. */
const PROJECT = `cmake_minimum_required(VERSION 3.16)
project(libwebsockets NONE)
enable_testing()
macro(sai_resource SR_NAME SR_AMOUNT SR_LEASE SR_SCOPE)
  if(DEFINED ENV{SAI_OVN})
    add_test(NAME st_res_\${SR_SCOPE} COMMAND /bin/bash
      \${CMAKE_SOURCE_DIR}/ctest-background.sh res_\${SR_SCOPE}
      sai-resource \${SR_NAME} \${SR_AMOUNT} \${SR_LEASE}
      vm-res_\${SR_SCOPE}-libwebsockets-$ENV{SAI_OVN} -d1039)
    set_tests_properties(st_res_\${SR_SCOPE} PROPERTIES
      WORKING_DIRECTORY . FIXTURES_SETUP res_sspcmin TIMEOUT 100)
    add_test(NAME ki_res_\${SR_SCOPE} COMMAND /bin/bash
      \${CMAKE_SOURCE_DIR}/ctest-background-kill.sh res_\${SR_SCOPE}
      sai-resource)
    set_tests_properties(ki_res_\${SR_SCOPE} PROPERTIES
      FIXTURES_CLEANUP res_\${SR_SCOPE})
  endif()
endmacro()
foreach(s IN ITEMS ${SCOPES.join(" ")})
  sai_resource(warmcat_conns 1 ${LEASE} \${s})
  foreach(i IN ITEMS 1 2)
    add_test(NAME \${s}.\${i} COMMAND /bin/sh
      \${CMAKE_SOURCE_DIR}/work.sh \${s}.\${i})
    set_tests_properties(\${s}.\${i} PROPERTIES FIXTURES_REQUIRED res_\${s})
  endforeach()
endforeach()
set_tests_properties(st_res_late PROPERTIES DEPENDS ki_res_late)
`;

/** The setup: start $2 $3… in the background, record its PID, return. */
const BACKGROUND = `# usage: ctest-background.sh FIXTURE PROGRAM ARGS...
echo "st_$1" >> order.txt
j=$(basename "$2").$1
"\${@:2}" </dev/null >"$j.out" 2>"$j.log" &
echo $! > "$j.pid"
sleep 1
exit 0
`;

/**
 * The cleanup: the PID must be alive, then SIGTERM (SIGKILL 10 s later).
 * With no PID file, \`kill -0\` gets no PID: a usage error, status 2, not
 * the 1 of a dead process, so it goes on and passes having killed nothing.
 */
const BACKGROUND_KILL = `# usage: ctest-background-kill.sh FIXTURE PROGRAM
echo "ki_$1" >> order.txt
j=$(basename "$2").$1
pid=$(cat "$j.pid" 2>/dev/null)
kill -0 $pid
if [ $? -eq 1 ]; then
  echo "Background process $pid unexpectedly dead already, its log:"
  cat "$j.log"
  exit 1
fi
kids=
[ -n "$pid" ] && kids=$(pgrep -P "$pid")
kill $pid $kids 2>/dev/null
for i in $(seq 120); do
  alive=
  for p in $pid $kids; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && { echo "went down"; exit 0; }
  [ "$i" = 100 ] && kill -9 $pid $kids 2>/dev/null
  sleep 0.1
done
echo "could not kill $pid"
exit 1
`;

const WORK = `echo "$1" >> order.txt
sleep 0.2
`;

/** PIDs of our sai-resource processes whose command line has `marker`. */
async function clientPids(marker: string): Promise<number[]> {
  const out = await new Deno.Command("pgrep", {
    args: ["-f", "--", `client\\.ts.*${marker}`],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean)
    .map(Number);
}

Deno.test({
  name:
    `upstream's fixtures with our sai-resource and no setting: ctest -j1, -j2 and -j8 pass, a cleanup before its setup included, and leave no process${SKIP}`,
  ignore: !HAVE_CMAKE,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sai-dropin-" });
    // In every cookie, so pgrep finds this run's processes and no others.
    const marker = Array.from(
      crypto.getRandomValues(new Uint8Array(16)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    try {
      await Deno.mkdir(`${dir}/src`);
      await Deno.mkdir(`${dir}/bin`);
      await Deno.writeTextFile(`${dir}/src/CMakeLists.txt`, PROJECT);
      await Deno.writeTextFile(`${dir}/src/ctest-background.sh`, BACKGROUND);
      await Deno.writeTextFile(
        `${dir}/src/ctest-background-kill.sh`,
        BACKGROUND_KILL,
      );
      await Deno.writeTextFile(`${dir}/src/work.sh`, WORK);
      // Our sai-resource on PATH; exec keeps the PID the setup records.
      await Deno.writeTextFile(
        `${dir}/bin/sai-resource`,
        `#!/bin/sh\nexec ${
          [Deno.execPath(), ...runArgs(`${ROOT}client.ts`)].map((a) => `"${a}"`)
            .join(" ")
        } "$@"\n`,
        { mode: 0o755 },
      );
      for (const j of ["-j1", "-j2", "-j8"]) {
        // A farm and a build tree per run: each run starts from nothing.
        await using server = await ServerProc.start([
          "--resources",
          "warmcat_conns=1",
        ]);
        await using builder = await BuilderProc.start(server);
        const build = `${dir}/build${j}`;
        const configured = await run("cmake", [
          "-S",
          `${dir}/src`,
          "-B",
          build,
        ], {
          cwd: dir,
          env: { PATH: "/usr/bin:/bin", SAI_OVN: `${marker}${j}` },
        });
        assert.equal(configured.code, 0, configured.out);
        const got = await run("ctest", [j, "--output-on-failure"], {
          cwd: build,
          // No SAI_RESOURCE_FOREGROUND: run() passes no SAI_ variable but
          // these.
          env: {
            PATH: `${dir}/bin:/usr/bin:/bin`,
            SAI_BUILDER_RESOURCE_PROXY: builder.socket,
          },
          timeoutMs: 90_000,
        });
        const ended = monotonic();
        const logs = await Promise.all(
          SCOPES.map(async (s) =>
            `${s}: ${await Deno.readTextFile(
              `${build}/sai-resource.res_${s}.log`,
            ).catch(() => "(no log)")}`
          ),
        );
        const context = `ctest ${j}:\n${got.out}\n${logs.join("\n")}`;
        assert.equal(got.code, 0, context);
        assert.match(
          got.out,
          /100% tests passed, 0 tests failed out of 16/,
          context,
        );
        // Upstream's setups do not wait for a grant, so no run waits for a
        // lease; one that took LEASE seconds waited for an expiry.
        assert.ok(got.ms < LEASE * 1000 / 2, `${context}\n${got.ms} ms`);
        const order = (await Deno.readTextFile(`${build}/order.txt`))
          .split("\n");
        assert.ok(order.includes("st_res_late"), order.join(" "));
        assert.ok(
          order.indexOf("ki_res_late") < order.indexOf("st_res_late"),
          `the cleanup ran before its setup: ${order.join(" ")}`,
        );
        // Nothing signalled late's sai-resource: it ends with ctest.
        const gone = await waitFor(
          "every sai-resource of the run to exit",
          async () =>
            (await clientPids(`${marker}${j}`)).length === 0 &&
            monotonic(),
          10_000,
        );
        const late = await Deno.readTextFile(
          `${build}/sai-resource.res_late.log`,
        );
        assert.match(
          late,
          /ctest \(pid \d+\) exited(: released warmcat_conns| while waiting; the request was withdrawn)/,
          context,
        );
        await waitFor("nothing allocated or queued", async () => {
          const r = await server.resource("warmcat_conns");
          return r.allocated === 0 && r.queuedRequests === 0;
        }, 5_000);
        const { stats } = await server.status();
        assert.equal(stats.expiries, 0, `${context}: a lease ran out`);
        // deno-lint-ignore no-console
        console.log(
          `ctest ${j}: ${Math.round(got.ms)} ms; last sai-resource gone ${
            Math.round(Number(gone) - ended)
          } ms after ctest exited; ${stats.grants} grants`,
        );
      }
    } finally {
      for (const pid of await clientPids(marker)) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

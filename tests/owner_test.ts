/**
 * A holder follows the process it holds its lease for (issue #13): a
 * cancelled CI job, a killed ctest or an exited shell must not leave
 * capacity held until the lease runs out.  Real processes throughout:
 * ctest, shells, `sleep` as owners.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  BuilderProc,
  holderPids,
  Proc,
  ServerProc,
  uniq,
  waitFor,
} from "./_harness.ts";
import { baseEnv, configure, HAVE_CMAKE, SAI_RESOURCE } from "./_ctest.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MODULE = `${ROOT}cmake/SaiResource.cmake`;
/** sai-resource from source, with its compiled binary's permissions. */
const CLIENT = SAI_RESOURCE;
const HAVE_CTEST = HAVE_CMAKE;

/** Runs `sai-resource` with `args` under `sh -c`, to completion. */
async function viaShell(
  script: string,
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("sh", {
    args: ["-c", script],
    env: { ...baseEnv(), ...env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
const CLIENT_SH = CLIENT.map(quote).join(" ");

/**
 * Two fixture scopes (resources a and b; the module takes one resource's
 * scopes one after another) and two launched tests on c, of budget 1: one
 * runs, the other waits.  The fixtures' tests ignore SIGTERM, as tests busy
 * shutting down do: ctest then cannot run the cleanup tests before it dies,
 * and only the holders' owner watch can free the fixtures' leases.
 */
function project(): string {
  return `cmake_minimum_required(VERSION 3.16)
project(cancel NONE)
enable_testing()
include("${MODULE}")
foreach(res a b)
  sai_resource(\${res} 1 60 scope_\${res})
  add_test(NAME \${res}.work
    COMMAND /bin/sh "\${CMAKE_CURRENT_SOURCE_DIR}/stubborn.sh")
  set_tests_properties(\${res}.work PROPERTIES FIXTURES_REQUIRED res_scope_\${res})
endforeach()
sai_resource_launcher(one c 1 60)
foreach(i 1 2)
  add_test(NAME launched.\${i} COMMAND \${one} sleep 30)
endforeach()
`;
}

/** Sum of a number over every resource of a status document. */
async function total(
  server: ServerProc,
  of: "allocated" | "queuedRequests",
): Promise<number> {
  return (await server.status()).resources.reduce((n, r) => n + r[of], 0);
}

Deno.test({
  name:
    "a ctest -j4 run cancelled as a CI runner does leaves nothing held or queued within 3 s",
  ignore: !HAVE_CTEST,
  async fn() {
    await using server = await ServerProc.start(["--resources", "a=1,b=1,c=1"]);
    await using builder = await BuilderProc.start(server);
    const dir = await Deno.makeTempDir({ prefix: "sai-cancel-" });
    let ctest: Deno.ChildProcess | undefined;
    try {
      await Deno.mkdir(`${dir}/src`);
      await Deno.writeTextFile(`${dir}/src/CMakeLists.txt`, project());
      await Deno.writeTextFile(
        `${dir}/src/stubborn.sh`,
        "trap '' TERM\nsleep 30\n",
      );
      await configure(`${dir}/src`, `${dir}/build`, CLIENT);
      // Its own session and process group, as a CI runner starts a job.
      ctest = new Deno.Command("ctest", {
        args: ["-j4", "--test-dir", `${dir}/build`],
        env: { ...baseEnv(), SAI_BUILDER_RESOURCE_PROXY: builder.socket },
        clearEnv: true,
        stdin: "null",
        stdout: "null",
        stderr: "null",
        detached: true,
      }).spawn();
      const pgid = ctest.pid;
      // Both fixtures and one launched test hold; the other one waits.
      await waitFor(
        "three leases and a queued request",
        async () =>
          await total(server, "allocated") === 3 &&
          await total(server, "queuedRequests") === 1,
        30_000,
      );
      // Both setups done (their tests run): the holders hold for ctest,
      // not for a setup process the cancel could still kill mid-grant.
      await waitFor("the fixtures' tests to run", async () => {
        const ps = await new Deno.Command("pgrep", {
          args: ["-g", String(pgid), "-f", "stubborn.sh"],
          stdout: "piped",
        }).output();
        return new TextDecoder().decode(ps.stdout).trim().split("\n")
          .filter(Boolean).length === 2;
      }, 30_000);
      const held = (await server.status()).resources.flatMap((r) => r.leases);
      const fixtures = held.filter((l) => l.process).length;
      assert.equal(fixtures, 2, JSON.stringify(held));
      for (const l of held.filter((l) => l.process)) {
        assert.deepEqual(l.process, { pid: pgid, name: "ctest" });
      }
      assert.ok(
        (await holderPids("", { socket: builder.socket })).length >= 2,
        "holders are running",
      );

      // The cancel: SIGTERM to the job's group, SIGKILL a second later.
      const cancelled = Date.now();
      Deno.kill(-pgid, "SIGTERM");
      const kill = setTimeout(() => {
        try {
          Deno.kill(-pgid, "SIGKILL");
        } catch { /* gone */ }
      }, 1000);
      try {
        await waitFor(
          "nothing held or queued",
          async () =>
            await total(server, "allocated") === 0 &&
            await total(server, "queuedRequests") === 0,
          3000,
        );
        const freed = Date.now() - cancelled;
        await waitFor(
          "no holder left",
          async () =>
            (await holderPids("", { socket: builder.socket })).length === 0,
          3000 - (Date.now() - cancelled),
        );
        const clean = Date.now() - cancelled;
        // deno-lint-ignore no-console -- the measured times, for docs/reliability.md
        console.log(
          `cancel: budget free after ${freed} ms, no holder after ${clean} ms (${fixtures} fixture lease(s) held for ctest)`,
        );
        assert.equal((await server.status()).stats.ownerGone, fixtures);
      } finally {
        clearTimeout(kill);
        try {
          Deno.kill(-pgid, "SIGKILL");
        } catch { /* gone */ }
      }
    } finally {
      await ctest?.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("a holder keeps its lease while its owner lives, and gives it back when the owner exits", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const alive = new Deno.Command("sleep", { args: ["60"] }).spawn();
  const doomed = new Deno.Command("sleep", { args: ["60"] }).spawn();
  try {
    const kept = uniq("kept");
    const a = await new Proc(
      ["client.ts", "r", "1", "2", kept, "--owner-pid", String(alive.pid)],
      { env },
    ).finished();
    assert.equal(a.code, 0, a.stderr);
    assert.match(
      a.stderr,
      new RegExp(`held while sleep \\(pid ${alive.pid}\\) runs`),
    );
    const gone = uniq("gone");
    const b = await new Proc(
      ["client.ts", "r", "1", "60", gone, "--owner-pid", String(doomed.pid)],
      { env },
    ).finished();
    assert.equal(b.code, 0, b.stderr);
    const leases = (await server.resource("r")).leases;
    assert.deepEqual(
      leases.find((l) => l.cookie === gone)?.process,
      { pid: doomed.pid, name: "sleep" },
    );

    doomed.kill("SIGKILL");
    await doomed.status;
    const killed = Date.now();
    await waitFor(
      "the lease of the exited owner to end",
      async () =>
        !(await server.resource("r")).leases.some((l) => l.cookie === gone),
      5000,
    );
    const ms = Date.now() - killed;
    assert.ok(ms < 2000, `released ${ms} ms after its owner exited`);
    // The live owner's lease ran to its end: expired, not released.
    await waitFor(
      "the live owner's lease to expire",
      async () => (await server.status()).stats.expiries === 1,
      10_000,
    );
    const { stats } = await server.status();
    assert.equal(stats.ownerGone, 1);
    assert.equal(stats.releases, 1);
    await server.stderr.wait(
      new RegExp(`released .*cookie=${gone} reason="?owner gone`),
    );
  } finally {
    for (const p of [alive, doomed]) {
      try {
        p.kill("SIGKILL");
      } catch { /* exited */ }
      await p.status;
    }
  }
});

Deno.test("a shell wrapper that exits at once: the lease ends with the shell, unless --no-owner", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  // `; true` keeps sh from exec-ing sai-resource: sh is its parent.
  const followed = uniq("followed");
  const got = await viaShell(`${CLIENT_SH} r 1 60 ${followed}; true`, env);
  assert.equal(got.code, 0, got.stderr);
  assert.match(got.stderr, /held while sh \(pid \d+\) runs/);
  await waitFor(
    "the lease to end with the shell",
    async () => (await server.status()).stats.ownerGone === 1,
    5000,
  );
  const kept = uniq("kept");
  const noOwner = await viaShell(
    `${CLIENT_SH} r 1 60 ${kept} --no-owner; true`,
    env,
  );
  assert.equal(noOwner.code, 0, noOwner.stderr);
  assert.doesNotMatch(noOwner.stderr, /held while/);
  const r = await server.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), [kept]);
  assert.equal(r.leases[0]!.process, undefined);
  assert.equal((await holderPids(kept, { socket: builder.socket })).length, 1);
});

Deno.test("an owner the holder cannot see is reported once at grant time, and the lease is kept", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const cookie = uniq("unseen");
  // A PID above any pid_max: not visible, as one from another namespace.
  const got = await new Proc(
    ["client.ts", "r", "1", "60", cookie, "--owner-pid", "2147483647"],
    { env },
  ).finished();
  assert.equal(got.code, 0, got.stderr);
  const warnings = got.stderr.match(/cannot see process 2147483647/g) ?? [];
  assert.equal(warnings.length, 1, got.stderr);
  assert.match(
    got.stderr,
    /cannot see process 2147483647 \(--owner-pid\): .*: the holder keeps the lease until it is released or expires/,
  );
  assert.equal((await server.resource("r")).allocated, 1);
  assert.equal(
    (await holderPids(cookie, { socket: builder.socket })).length,
    1,
  );
});

const CAN_UNSHARE = Deno.uid() === 0 &&
  await new Deno.Command("unshare", {
    args: ["--pid", "--fork", "--mount-proc", "true"],
    stdout: "null",
    stderr: "null",
  }).output().then((o) => o.success, () => false);

Deno.test({
  name:
    "in another PID namespace the parent cannot be seen: said once at grant time",
  ignore: !CAN_UNSHARE,
  async fn() {
    await using server = await ServerProc.start(["--resources", "r=2"]);
    await using builder = await BuilderProc.start(server);
    const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
    // sai-resource is PID 1 of a new namespace: its parent reads as 0.
    const got = await viaShell(
      `exec unshare --pid --fork --mount-proc ${CLIENT_SH} r 1 60`,
      env,
    );
    assert.equal(got.code, 0, got.stderr);
    const warnings = got.stderr.match(/another PID namespace/g) ?? [];
    assert.equal(warnings.length, 1, got.stderr);
  },
});

Deno.test("--owner-pid and --no-owner: usage errors exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["r", "1", "60", "--owner-pid", "0"],
      /--owner-pid must be a positive integer, got "0"/,
    ],
    [
      ["r", "1", "60", "--owner-pid", "5", "--no-owner"],
      /give --owner-pid or --no-owner, not both/,
    ],
    [
      ["r", "1", "60", "--no-owner", "--", "true"],
      /--no-owner is for the holder form/,
    ],
    [
      ["--release", "c", "--owner-pid", "5"],
      /--owner-pid is for the holder form/,
    ],
  ];
  for (const [args, re] of cases) {
    const got = await new Proc([
      "client.ts",
      ...args,
      "--socket",
      "/nonexistent",
    ])
      .finished();
    assert.equal(got.code, 2, `${args.join(" ")}: ${got.stderr}`);
    assert.match(got.stderr, re);
  }
});

Deno.test("a queued request whose owner exits is withdrawn, and says why", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const first = await new Proc(["client.ts", "r", "1", "60"], { env })
    .finished();
  assert.equal(first.code, 0, first.stderr);
  const owner = new Deno.Command("sleep", { args: ["60"] }).spawn();
  try {
    const waiting = new Proc(
      ["client.ts", "r", "1", "60", "--owner-pid", String(owner.pid)],
      { env },
    );
    await waitFor(
      "the request to queue",
      async () => (await server.resource("r")).queuedRequests === 1,
    );
    owner.kill("SIGKILL");
    await owner.status;
    const got = await waiting.finished();
    assert.equal(got.code, 1);
    assert.match(
      got.stderr,
      new RegExp(
        `cancelled \\(sleep \\(pid ${owner.pid}\\) exited\\); the request was withdrawn`,
      ),
    );
    await waitFor(
      "the request to leave the queue",
      async () => (await server.resource("r")).queuedRequests === 0,
    );
  } finally {
    try {
      owner.kill("SIGKILL");
    } catch { /* exited */ }
    await owner.status;
  }
});

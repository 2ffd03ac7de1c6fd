/**
 * Drop-in for upstream Sai tooling: the C client's bytes and behaviour on
 * our builder, upstream's background-start and kill scripts driving our
 * `sai-resource` under real ctest, `@NAME` abstract sockets, foreground
 * holding, and releases after expiry.  The stand-ins for upstream's client
 * and scripts are written from its observed behaviour; no upstream code.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  BuilderProc,
  holderPids,
  Proc,
  runArgs,
  runClient,
  ServerProc,
  waitFor,
} from "./_harness.ts";
import { HAVE_CMAKE, run, SKIP } from "./_ctest.ts";
import { JsonObjectSplitter } from "../src/protocol/json_splitter.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** A cookie shaped as upstream's macro makes them: 100+ characters. */
function upstreamCookie(scope: string): string {
  const task = Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  return `sai-builder-debian-x86_64-res_${scope}-libwebsockets-${task}`;
}

/** The C-client stand-in, connected to `socket`. */
function cClient(socket: string, args: string[]): Proc {
  return new Proc(["tests/_c_client.ts", ...args, "-d1039"], {
    env: { SAI_BUILDER_RESOURCE_PROXY: socket },
  });
}

/** The JSON objects a C-client stand-in hex-dumped so far. */
function received(p: Proc): Record<string, unknown>[] {
  const hex = [...p.stdout.text.matchAll(/^rx ([0-9a-f]+)$/gm)].map((m) =>
    m[1]!
  ).join("");
  const bytes = new Uint8Array(
    (hex.match(/../g) ?? []).map((h) => parseInt(h, 16)),
  );
  return new JsonObjectSplitter().push(bytes).map((t) => JSON.parse(t));
}

async function receivedSoon(
  p: Proc,
  what: string,
  pred: (m: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  return await waitFor(what, () => received(p).find(pred));
}

function exited(p: Proc): Promise<boolean> {
  return Promise.race([
    p.child.status.then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), 0)),
  ]);
}

Deno.test("the C client on our builder: long cookies, no queue progress, refusals carry its cookie", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const [a, b, big] = [
    upstreamCookie("a"),
    upstreamCookie("b"),
    upstreamCookie("big"),
  ];
  assert.ok(a.length > 100);
  // One at a time, so that the queue order is A, B, ours.
  const holderA = cClient(builder.socket, ["r", "1", "60", a]);
  const started = [holderA];
  try {
    await receivedSoon(holderA, "A's grant", (m) => m.amount === 1);
    assert.equal(received(holderA)[0]!.cookie, a, "the whole cookie echoed");
    // B queues behind A, then ours behind B.
    const holderB = cClient(builder.socket, ["r", "1", "60", b]);
    started.push(holderB);
    await waitFor(
      "B to queue",
      async () =>
        (await server.resource("r")).queue.some((q) => q.cookie === b),
    );
    const ours = new Proc([
      "client.ts",
      "r",
      "1",
      "60",
      "ours-progress",
      "--socket",
      builder.socket,
    ]);
    started.push(ours);
    // Ours asked for progress and got it, while B waited too.
    await ours.stderr.wait(/queued for r: position 2/);
    holderA.kill("SIGTERM");
    assert.equal((await holderA.finished()).code, 1, "killed: exit 1");
    await receivedSoon(holderB, "B's grant", (m) => m.amount === 1);
    await ours.stderr.wait(/queued for r: position 1/);
    assert.deepEqual(
      received(holderB).map((m) => "amount" in m),
      [true],
      "B, queued all along, saw only its grant",
    );

    // Refusals carry the request's cookie: over the budget...
    const tooBig = cClient(builder.socket, ["r", "5", "10", big]);
    const refusal = await receivedSoon(
      tooBig,
      "a refusal",
      (m) => "error" in m,
    );
    assert.equal(refusal.cookie, big);
    await tooBig.child.status;
    // ...and a cookie already in use on this builder.
    const twin = cClient(builder.socket, ["r", "1", "10", b]);
    const dup = await receivedSoon(twin, "a refusal", (m) => "error" in m);
    assert.equal(dup.cookie, b);
    assert.match(String(dup.error), /already in use/);
    await twin.child.status;

    holderB.kill("SIGTERM");
    assert.equal((await holderB.finished()).code, 1);
    assert.equal((await ours.finished()).code, 0, ours.stderr.text);
    assert.match(ours.stderr.text, /granted 1 of r/);
  } finally {
    for (const p of started) p.kill("SIGKILL");
    await Promise.all(started.map((p) => p.finished()));
  }
});

Deno.test("the C client stays connected after `expired`, and that connection counts toward nothing", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const [a, b] = [upstreamCookie("a"), upstreamCookie("b")];
  const holderA = cClient(builder.socket, ["r", "1", "1", a]);
  let holderB: Proc | undefined;
  try {
    await receivedSoon(holderA, "A's expiry", (m) => m.expired === true);
    assert.deepEqual(
      received(holderA).map((m) => Object.keys(m).sort().join(",")),
      [
        "amount,cookie,expires,id,lease,resname,schema",
        "cookie,expired,schema",
      ],
      "A saw its grant and expired, nothing else",
    );
    // The budget is free again although A is still connected.
    holderB = cClient(builder.socket, ["r", "1", "60", b]);
    await receivedSoon(holderB, "B's grant", (m) => m.amount === 1);
    assert.equal(await exited(holderA), false, "A still runs");
    assert.doesNotMatch(holderA.stdout.text, /connection dropped/);
    const res = await server.resource("r");
    assert.deepEqual(res.leases.map((l) => l.cookie), [b]);
    // Killed by signal, as upstream's cleanup does: exit 1, and B is
    // untouched by A's connection closing.
    holderA.kill("SIGTERM");
    assert.equal((await holderA.finished()).code, 1);
    assert.doesNotMatch(holderA.stdout.text, /connection dropped/);
    assert.deepEqual(
      (await server.resource("r")).leases.map((l) => l.cookie),
      [b],
    );
  } finally {
    for (const p of [holderA, holderB]) p?.kill("SIGKILL");
    await Promise.all([holderA, holderB].map((p) => p?.finished()));
  }
});

Deno.test("an @NAME abstract socket serves our client and the C client, warns, and refuses release by cookie", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  const name = `@sai-test-${crypto.randomUUID()}`;
  await using builder = await BuilderProc.start(server, {
    args: ["--socket", name],
  });
  assert.equal(builder.socket, name, "the builder reports the @NAME");
  const unix = await Deno.readTextFile("/proc/net/unix");
  assert.ok(unix.includes(name), "listed as an abstract socket");
  // Its cost, said at start: any local user can reach it, or bind it first.
  await builder.stderr.wait(
    new RegExp(
      `WARN abstract socket: every local user can connect to this builder and impersonate it socket=${name}`,
    ),
  );
  // Ours, through SAI_BUILDER_RESOURCE_PROXY, holding in the foreground.
  const fg = new Proc(["client.ts", "r", "1", "30", "abs-ours", "-d", "0"], {
    env: { SAI_BUILDER_RESOURCE_PROXY: name, SAI_RESOURCE_FOREGROUND: "1" },
  });
  try {
    await fg.stdout.wait(/^abs-ours$/m);
    assert.equal(fg.stderr.text, "", "-d 0 is quiet");
    // --socket @NAME, releasing it by cookie: refused, since any local user
    // could do it (issue 18); the lease stays.
    const rel = await runClient(["--release", "abs-ours", "--socket", name]);
    assert.equal(rel.code, 1, rel.stderr);
    assert.match(
      rel.stderr,
      /Cannot release "abs-ours" by cookie on the abstract socket .*path socket \(--socket PATH\)/,
    );
    const scope = await runClient(["--release-scope", "abs-ours"], {
      SAI_BUILDER_RESOURCE_PROXY: name,
    });
    assert.equal(scope.code, 1, scope.stderr);
    const r = await server.resource("r");
    assert.deepEqual(r.leases.map((l) => l.cookie), ["abs-ours"]);
    assert.equal(r.allocated, 1);
    // Its own holder ends it.
    fg.kill("SIGTERM");
    assert.equal((await fg.finished()).code, 0);
    // The C client reaches it the way C does (a leading NUL).
    const c = cClient(name, ["r", "1", "10", upstreamCookie("abs")]);
    await receivedSoon(c, "a grant", (m) => m.amount === 1);
    c.kill("SIGTERM");
    assert.equal((await c.finished()).code, 1);
  } finally {
    fg.kill("SIGKILL");
    await fg.finished();
  }
});

Deno.test("--foreground holds until signalled, warns at expiry and keeps running, exits when the builder goes away", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using builder = await BuilderProc.start(server);
  const start = (cookie: string, lease: number, flags: string[] = []) =>
    new Proc([
      "client.ts",
      "r",
      "1",
      String(lease),
      cookie,
      "--socket",
      builder.socket,
      ...flags,
    ], { env: { SAI_RESOURCE_FOREGROUND: "1" } });
  const short = start("fg-short", 1, ["-d1039"]);
  const long = new Proc([
    "client.ts",
    "r",
    "1",
    "60",
    "fg-long",
    "--socket",
    builder.socket,
    "--foreground",
  ]);
  try {
    await short.stdout.wait(/^fg-short$/m);
    await long.stdout.wait(/^fg-long$/m);
    assert.equal((await holderPids("fg-", builder)).length, 0, "no holder");
    // -d1039 (LLL_INFO set) is verbose: the builder's messages are shown.
    assert.match(short.stderr.text, /from the builder: .*"amount":1/);
    // At expiry: a warning, and it keeps running until signalled.
    await short.stderr.wait(/expired \(the builder said so\).*still running/);
    assert.equal(await exited(short), false);
    short.kill("SIGTERM");
    const s = await short.finished();
    assert.equal(s.code, 0, s.stderr);
    // The server ends fg-short a moment after the builder told it.
    await waitFor(
      "the server to expire fg-short",
      async () => (await server.resource("r")).allocated === 1,
    );
    // SIGHUP releases at once.
    long.kill("SIGHUP");
    const l = await long.finished();
    assert.equal(l.code, 0, l.stderr);
    assert.match(l.stderr, /SIGHUP: released r/);
    await waitFor(
      "the release",
      async () => (await server.resource("r")).allocated === 0,
    );

    // A signal while still queued withdraws the request.
    const all = new Proc([
      "client.ts",
      "r=2",
      "60",
      "fg-all",
      "--socket",
      builder.socket,
      "--foreground",
    ]);
    await all.stdout.wait(/^fg-all$/m);
    const waiting = start("fg-waiting", 60);
    await waiting.stderr.wait(/queued for r: position 1/);
    waiting.kill("SIGTERM");
    const w = await waiting.finished();
    assert.equal(w.code, 143, w.stderr);
    assert.match(w.stderr, /SIGTERM while waiting; the request was withdrawn/);
    await waitFor(
      "the withdrawal",
      async () => (await server.resource("r")).queuedRequests === 0,
    );
    all.kill("SIGINT");
    assert.equal((await all.finished()).code, 0);

    // The builder goes away while the lease is held: exit 1.
    const orphan = start("fg-orphan", 60);
    await orphan.stdout.wait(/^fg-orphan$/m);
    await builder.stop();
    const o = await orphan.finished();
    assert.equal(o.code, 1);
    assert.match(o.stderr, /the builder closed the connection/);
  } finally {
    for (const p of [short, long]) p.kill("SIGKILL");
    await Promise.all([short.finished(), long.finished()]);
  }
});

Deno.test("a release after expiry passes with a warning saying how long it ran ungated; --strict fails", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  for (const strict of [false, true]) {
    const cookie = `late-${strict}`;
    const got = await runClient(["r", "1", "1", cookie], env);
    assert.equal(got.code, 0, got.stderr);
    await waitFor(
      "the expiry",
      async () => (await server.status()).stats.expiries === (strict ? 2 : 1),
    );
    const rel = await runClient(
      ["--release", cookie, ...(strict ? ["--strict"] : [])],
      env,
    );
    assert.equal(rel.code, strict ? 1 : 0, rel.stderr);
    assert.match(
      rel.stderr,
      new RegExp(
        `${
          strict ? "error" : "warning"
        }: the lease with cookie "${cookie}" had already expired \\d+ s ago: the tests it gated ran ungated for up to \\d+ s`,
      ),
    );
    // Once only: the builder forgets it after telling.
    const again = await runClient(["--release", cookie], env);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no lease with cookie/);
  }
});

Deno.test("a 255-character cookie works through the client, the status API and the admin API", async () => {
  const token = "admin-token-for-tests";
  await using server = await ServerProc.start([
    "--resources",
    "r=1",
    "--admin-token",
    token,
  ]);
  await using builder = await BuilderProc.start(server);
  const cookie = upstreamCookie("x").padEnd(255, "z");
  // -d alone would hold in the foreground, as upstream's scripts want.
  const got = await runClient(
    ["r", "1", "60", cookie, "-d", "1039", "--detach"],
    {
      SAI_BUILDER_RESOURCE_PROXY: builder.socket,
    },
  );
  assert.equal(got.code, 0, got.stderr);
  assert.equal(got.stdout.trim(), cookie);
  const res = await server.resource("r");
  assert.deepEqual(res.leases.map((l) => l.cookie), [cookie]);
  const del = await fetch(
    `http://127.0.0.1:${server.port}/api/leases/b1/${cookie}`,
    { method: "DELETE", headers: { authorization: `Bearer ${token}` } },
  );
  assert.equal(del.status, 200, await del.clone().text());
  assert.equal((await del.json()).cookie, cookie);
  await waitFor(
    "the holder to exit",
    async () => (await holderPids(cookie.slice(0, 40), builder)).length === 0,
  );
  const tooLong = await runClient(["r", "1", "60", cookie + "z"], {
    SAI_BUILDER_RESOURCE_PROXY: builder.socket,
  });
  assert.equal(tooLong.code, 2);
  assert.match(tooLong.stderr, /COOKIE must be 1 to 255 printable ASCII/);
});

/** Starts sai-resource in the background as upstream's setup test does. */
const BG_START = `#!/bin/sh
# usage: bg_start.sh PIDFILE LOG NAME AMOUNT LEASE COOKIE
# Starts sai-resource in the background with libwebsockets' log level and
# returns after a second, without waiting for the grant.
pidfile=$1; log=$2; shift 2
sai-resource "$@" -d1039 </dev/null >"$log.out" 2>"$log.err" &
echo $! >"$pidfile"
sleep 1
exit 0
`;

/** Ends it as upstream's cleanup test does. */
const BG_KILL = `#!/bin/sh
# usage: bg_kill.sh PIDFILE
# The PID must still be alive; SIGTERM it and its descendants, SIGKILL if
# it is still there 10 s later.
pid=$(cat "$1")
alive() { ps -o stat= -p "$1" 2>/dev/null | grep -qv Z; }
if ! kill -0 "$pid" 2>/dev/null || ! alive "$pid"; then
  echo "sai-resource $pid unexpectedly dead already" >&2
  exit 1
fi
for child in $(pgrep -P "$pid"); do kill -TERM "$child" 2>/dev/null; done
kill -TERM "$pid"
i=0
while alive "$pid"; do
  i=$((i + 1))
  if [ "$i" -ge 100 ]; then kill -KILL "$pid"; break; fi
  sleep 0.1
done
exit 0
`;

/** Exits 0 once the status document at $1 shows a lease whose cookie has $2. */
const LEASED = `#!/bin/sh
i=0
until curl -fs "$1" | grep -q "res_lws-libwebsockets-$2"; do
  i=$((i + 1))
  if [ "$i" -ge 400 ]; then echo "no lease for $2" >&2; exit 1; fi
  sleep 0.05
done
`;

/** A project using an upstream-style macro: active only with SAI_OVN. */
const PROJECT = `cmake_minimum_required(VERSION 3.16)
project(libwebsockets NONE)
enable_testing()
function(upstream_sai_resource NAME AMOUNT LEASE SCOPE)
  if(NOT DEFINED SAI_OVN)
    return()
  endif()
  set(cookie "vm-res_\${SCOPE}-\${PROJECT_NAME}-\${SAI_OVN}")
  set(base "\${CMAKE_BINARY_DIR}/sai-\${SCOPE}")
  add_test(NAME st_\${SCOPE} COMMAND /bin/sh
    "\${CMAKE_SOURCE_DIR}/bg_start.sh" "\${base}.pid" "\${base}"
    \${NAME} \${AMOUNT} \${LEASE} "\${cookie}")
  set_tests_properties(st_\${SCOPE} PROPERTIES FIXTURES_SETUP res_\${SCOPE})
  add_test(NAME ki_\${SCOPE} COMMAND /bin/sh
    "\${CMAKE_SOURCE_DIR}/bg_kill.sh" "\${base}.pid")
  set_tests_properties(ki_\${SCOPE} PROPERTIES FIXTURES_CLEANUP res_\${SCOPE})
endfunction()
upstream_sai_resource(warmcat_conns 1 60 lws)
# Upstream's setup does not wait for the grant: these tests wait (up to
# 20 s) until the status page shows the lease, so a slow start cannot pass
# ungated here.
foreach(i IN ITEMS 1 2)
  add_test(NAME lws.\${i} COMMAND /bin/sh
    "\${CMAKE_SOURCE_DIR}/leased.sh" "\${SAI_STATUS}" "\${SAI_OVN}")
  set_tests_properties(lws.\${i} PROPERTIES FIXTURES_REQUIRED res_lws)
endforeach()
`;

Deno.test({
  name:
    `upstream's background start and kill scripts drive our sai-resource under ctest${SKIP}`,
  ignore: !HAVE_CMAKE,
  async fn() {
    await using server = await ServerProc.start([
      "--resources",
      "warmcat_conns=1",
    ]);
    await using builder = await BuilderProc.start(server);
    const dir = await Deno.makeTempDir({ prefix: "sai-upstream-" });
    try {
      await Deno.mkdir(`${dir}/src`);
      await Deno.mkdir(`${dir}/bin`);
      await Deno.writeTextFile(`${dir}/src/CMakeLists.txt`, PROJECT);
      await Deno.writeTextFile(`${dir}/src/bg_start.sh`, BG_START);
      await Deno.writeTextFile(`${dir}/src/bg_kill.sh`, BG_KILL);
      await Deno.writeTextFile(`${dir}/src/leased.sh`, LEASED);
      // Our sai-resource on PATH; exec keeps the PID the script records.
      await Deno.writeTextFile(
        `${dir}/bin/sai-resource`,
        `#!/bin/sh\nexec ${
          [Deno.execPath(), ...runArgs(`${ROOT}client.ts`)].map((a) => `"${a}"`)
            .join(" ")
        } "$@"\n`,
        { mode: 0o755 },
      );
      const task = upstreamCookie("t").slice(-64);
      const build = `${dir}/build`;
      const configured = await run("cmake", [
        "-S",
        `${dir}/src`,
        "-B",
        build,
        `-DSAI_OVN=${task}`,
        `-DSAI_STATUS=http://127.0.0.1:${server.port}/api/status`,
      ], { cwd: dir, env: { PATH: "/usr/bin:/bin" } });
      assert.equal(configured.code, 0, configured.out);
      const got = await run("ctest", ["-j2", "--output-on-failure"], {
        cwd: build,
        env: {
          PATH: `${dir}/bin:/usr/bin:/bin`,
          SAI_BUILDER_RESOURCE_PROXY: builder.socket,
          SAI_RESOURCE_FOREGROUND: "1",
        },
        timeoutMs: 60_000,
      });
      assert.equal(got.code, 0, got.out);
      assert.match(got.out, /100% tests passed, 0 tests failed out of 4/);
      const err = await Deno.readTextFile(`${build}/sai-lws.err`);
      assert.match(
        err,
        /granted 1 of warmcat_conns for 60 s \(cookie vm-res_lws-libwebsockets-[0-9a-f]{64}\)/,
      );
      assert.match(err, /SIGTERM: released warmcat_conns/);
      await waitFor("the release", async () => {
        const r = await server.resource("warmcat_conns");
        return r.allocated === 0 && r.leases.length === 0;
      });
      const { stats } = await server.status();
      assert.equal(stats.grants, 1);
      assert.equal(stats.expiries, 0, "released by the kill, not expired");
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

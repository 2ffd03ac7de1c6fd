import assert from "node:assert/strict";
import {
  BuilderProc,
  Proc,
  runArgs,
  runClient,
  ServerProc,
  waitFor,
} from "./_harness.ts";

/** A command that says "ready", then runs until `file` exists. */
function untilFile(file: string, exitCode = 0): string[] {
  return [
    "sh",
    "-c",
    `echo ready; while [ ! -e '${file}' ]; do sleep 0.05; done; exit ${exitCode}`,
  ];
}

/** A command that says "ready" and runs until a signal it traps. */
const TRAPPER = [
  "sh",
  "-c",
  'trap "echo got INT; exit 5" INT; trap "echo got TERM; exit 6" TERM; ' +
  "echo ready; while :; do sleep 0.05; done",
];

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

Deno.test("launcher holds the lease while CMD runs, passes its status and output through, then releases", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using builder = await BuilderProc.start(server);
  const go = `${builder.dir}/go`;
  const p = new Proc(
    ["client.ts", "r", "2", "60", "--scope", "unit", "--", ...untilFile(go, 7)],
    {
      env: {
        SAI_BUILDER_RESOURCE_PROXY: builder.socket,
        SAI_RESOURCE_COOKIE_PREFIX: "build42.",
      },
    },
  );
  try {
    await p.stdout.wait(/ready/);
    const res = await server.resource("r");
    assert.equal(res.allocated, 2);
    assert.deepEqual(res.leases.map((l) => l.cookie), ["build42.unit"]);
    await Deno.writeTextFile(go, "");
    const got = await p.finished();
    assert.equal(got.code, 7, got.stderr);
    assert.equal(got.stdout, "ready\n", "CMD's stdout is the caller's");
    assert.match(
      got.stderr,
      /granted 2 of r for 60 s \(cookie build42\.unit\)/,
    );
  } finally {
    await p.stop();
  }
  await waitFor(
    "the lease to be released when CMD exits",
    async () => (await server.resource("r")).allocated === 0,
  );
  assert.equal((await server.status()).stats.releases, 1);
});

Deno.test("launcher gives CMD the caller's stdin", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...runArgs(new URL("../client.ts", import.meta.url).pathname),
      "r",
      "1",
      "60",
      "--quiet",
      "--",
      "sh",
      "-c",
      'read line; echo "got $line"',
    ],
    env: { SAI_BUILDER_RESOURCE_PROXY: builder.socket },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("hello\n"));
  await writer.close();
  const out = await child.output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, dec.decode(out.stderr));
  assert.equal(dec.decode(out.stdout), "got hello\n");
  assert.equal(dec.decode(out.stderr), "", "--quiet says nothing");
});

Deno.test("launcher forwards SIGINT and SIGTERM to CMD and exits 128+N when CMD dies of one", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const cases: [Deno.Signal, string[], RegExp, number][] = [
    ["SIGINT", TRAPPER, /got INT/, 5],
    ["SIGTERM", TRAPPER, /got TERM/, 6],
    // No trap: CMD is killed by the signal and we report it as a shell does.
    ["SIGTERM", untilFile("/nonexistent/never"), /^ready\n$/, 143],
  ];
  for (const [sig, cmd, said, code] of cases) {
    const p = new Proc(["client.ts", "r", "1", "60", "--", ...cmd], { env });
    try {
      await p.stdout.wait(/ready/);
      assert.equal((await server.resource("r")).allocated, 1);
      p.kill(sig);
      const got = await p.finished();
      assert.equal(got.code, code, `${sig}: ${got.stderr}`);
      assert.match(got.stdout, said);
    } finally {
      await p.stop();
    }
    await waitFor(
      "the lease to be released",
      async () => (await server.resource("r")).allocated === 0,
    );
  }
});

Deno.test("launcher does not run CMD when the lease is refused, times out or is interrupted", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const ran = `${builder.dir}/ran`;
  const touch = ["--", "sh", "-c", `touch '${ran}'`];

  const refused = await runClient(["nosuch", "1", "10", ...touch], env);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /"nosuch": no such resource/);
  assert.equal(refused.stdout, "");

  const big = await runClient(["r", "2", "10", ...touch], env);
  assert.equal(big.code, 1);
  assert.match(big.stderr, /amount 2 exceeds the budget of 1/);

  // Hold the only unit, then time out behind it.
  const go = `${builder.dir}/go`;
  const owner = new Proc(
    ["client.ts", "r", "1", "60", "owner", "--", ...untilFile(go)],
    { env },
  );
  try {
    await owner.stdout.wait(/ready/);
    const late = await runClient(
      ["r", "1", "10", "--wait", "0.5", ...touch],
      env,
    );
    assert.equal(late.code, 1);
    assert.match(late.stderr, /queued for r: position 1, about \d+ s\n/);
    assert.match(late.stderr, /timed out waiting; the request was withdrawn/);

    // SIGTERM while queued: withdrawn, 143, CMD never started.
    const waiting = new Proc(["client.ts", "r", "1", "10", ...touch], { env });
    await waiting.stderr.wait(/queued for r: position 1/);
    waiting.kill("SIGTERM");
    const got = await waiting.finished();
    assert.equal(got.code, 143, got.stderr);
    assert.match(
      got.stderr,
      /SIGTERM while waiting; the request was withdrawn/,
    );
    await waitFor(
      "the queue to empty",
      async () => (await server.resource("r")).queuedRequests === 0,
    );
    assert.equal(await exists(ran), false, "CMD must not have run");
    await Deno.writeTextFile(go, "");
    assert.equal((await owner.finished()).code, 0);
  } finally {
    await owner.stop();
  }
});

Deno.test("launcher warns when the lease expires under CMD, and --kill-on-expiry stops it", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const expired =
    /the lease on r \(cookie [^)]+\) expired while "sh" \(pid \d+\) is still running/;

  // Without --kill-on-expiry CMD carries on and its status is kept.
  const go = `${builder.dir}/go`;
  const p = new Proc(["client.ts", "r", "1", "1", "--", ...untilFile(go, 3)], {
    env,
  });
  try {
    await p.stderr.wait(expired);
    // The builder ends it by its own clock; the server a moment later.
    await waitFor(
      "the server to expire the lease",
      async () => (await server.resource("r")).allocated === 0,
    );
    await Deno.writeTextFile(go, "");
    const got = await p.finished();
    assert.equal(got.code, 3, got.stderr);
    assert.doesNotMatch(got.stderr, /SIGTERM/);
  } finally {
    await p.stop();
  }

  // SIGTERM first: a CMD that handles it exits its own way.
  const polite = await runClient(
    ["r", "1", "1", "--kill-on-expiry", "--", ...TRAPPER],
    env,
  );
  assert.equal(polite.code, 6, polite.stderr);
  assert.match(polite.stdout, /got TERM/);
  assert.match(polite.stderr, /sending SIGTERM, then SIGKILL after 10 s/);

  // SIGKILL after the grace period for one that ignores SIGTERM.
  const stubborn = await runClient([
    "r",
    "1",
    "1",
    "--kill-on-expiry",
    "--grace",
    "0.3",
    "--",
    "sh",
    "-c",
    'trap "" TERM; echo ready; while :; do sleep 0.05; done',
  ], env);
  assert.equal(stubborn.code, 137, stubborn.stderr);
  assert.match(stubborn.stderr, /SIGKILL after 0\.3 s/);
});

Deno.test("launcher exits 127 when CMD does not exist, without taking a lease", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const got = await runClient(
    ["r", "1", "60", "--", "no-such-command-sai"],
    { SAI_BUILDER_RESOURCE_PROXY: builder.socket },
  );
  assert.equal(got.code, 127);
  assert.match(
    got.stderr,
    /cannot run "no-such-command-sai": not found; no lease was taken/,
  );
  assert.doesNotMatch(got.stderr, /granted/);
  const doc = await server.status();
  assert.equal(doc.stats.grants, 0);
  assert.equal(doc.resources[0]!.allocated, 0);
});

Deno.test("--optional without a builder socket runs CMD unmanaged; without it, a usage error", async () => {
  const env = { SAI_BUILDER_RESOURCE_PROXY: "" };
  const cmd = ["--", "sh", "-c", "echo ran; exit 4"];
  const managedOnly = await runClient(["r", "1", "10", ...cmd], env);
  assert.equal(managedOnly.code, 2);
  assert.match(managedOnly.stderr, /no builder socket/);
  assert.equal(managedOnly.stdout, "");

  const optional = await runClient(["r", "1", "10", "--optional", ...cmd], env);
  assert.equal(optional.code, 4, optional.stderr);
  assert.equal(optional.stdout, "ran\n");
  assert.match(optional.stderr, /going ahead without a lease/);

  for (
    const args of [
      ["r", "1", "10", "--optional", "--scope", "s"],
      ["--release-scope", "s", "--optional"],
      ["--release", "c", "--optional", "--quiet"],
    ]
  ) {
    const got = await runClient(args, env);
    assert.equal(got.code, 0, `${args}: ${got.stderr}`);
    assert.equal(got.stdout, "");
  }
});

Deno.test("launcher and scope usage errors exit 2 with the usage line", async () => {
  const env = { SAI_BUILDER_RESOURCE_PROXY: "/nonexistent.sock" };
  const long = "p".repeat(250);
  const cases: [string[], Record<string, string>, RegExp][] = [
    [["r", "1", "10", "--"], {}, /no command after --/],
    [["r", "1", "10", "--kill-on-expiry"], {}, /needs a command after --/],
    [["r", "1", "10", "--grace", "1"], {}, /needs a command after --/],
    [
      ["r", "1", "10", "--grace", "x", "--", "true"],
      {},
      /--grace must be a positive number of seconds, got "x"/,
    ],
    [["r", "1", "10", "c", "--scope", "s"], {}, /COOKIE or --scope, not both/],
    [["r", "1", "10", "--scope", "a b"], {}, /SCOPE must match/],
    [
      ["r", "1", "10", "--scope", "scope1"],
      { SAI_RESOURCE_COOKIE_PREFIX: long },
      /SAI_RESOURCE_COOKIE_PREFIX \+ SCOPE\) must be 1 to 255/,
    ],
    [
      ["r", "1", "10"],
      { SAI_RESOURCE_COOKIE_PREFIX: "x".repeat(220) },
      /SAI_RESOURCE_COOKIE_PREFIX \+ a random UUID\) must be 1 to 255/,
    ],
    [["--release", "a", "--release-scope", "b"], {}, /not both/],
    [["--release-scope", "s", "extra"], {}, /takes no other arguments/],
    // What follows -- is CMD's, never ours: --bogus is CMD's argument here,
    // so the error is the missing NAME, not the unknown option.
    [["--", "cmd", "--bogus"], {}, /expected NAME AMOUNT LEASE_SECONDS/],
  ];
  for (const [args, extra, reason] of cases) {
    const got = await runClient(args, { ...env, ...extra });
    assert.equal(got.code, 2, `${JSON.stringify(args)}: ${got.stderr}`);
    assert.match(got.stderr, reason, JSON.stringify(args));
    // One line saying what is wrong, one saying where help is: no usage.
    assert.equal(got.stderr.trimEnd().split("\n").length, 2, got.stderr);
    assert.match(got.stderr, /^Try "sai-resource --help" for the options\.$/m);
  }
});

/**
 * Whether `pid` is a running process (a zombie is not: it holds nothing but
 * its exit status, and a container's init may be slow to reap it).
 */
async function running(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !==
      "Z";
  } catch {
    return false;
  }
}

/** Reads the pid a command wrote to `file`, once it is there. */
async function pidIn(file: string): Promise<number> {
  return await waitFor(`a pid in ${file}`, async () => {
    const pid = Number((await Deno.readTextFile(file)).trim());
    return pid > 0 ? pid : undefined;
  });
}

/** Kills what a test's command left running, if anything. */
function reap(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    // Gone, as it should be.
  }
}

/**
 * Runs `sh -c SCRIPT` under the launcher (SCRIPT writes its background
 * job's pid to "$1" and prints "ready"), sends the launcher SIGTERM as
 * ctest would, and checks that CMD died of it and that the job is gone.
 */
async function sigtermEndsJob(
  env: Record<string, string>,
  options: { dir: string; script: string; what: string },
): Promise<void> {
  const pidFile = `${options.dir}/job.pid`;
  await Deno.remove(pidFile).catch(() => {});
  let job: number | undefined;
  const p = new Proc(
    [
      "client.ts",
      "r",
      "1",
      "60",
      "--",
      "sh",
      "-c",
      options.script,
      "sh",
      pidFile,
    ],
    { env },
  );
  try {
    await p.stdout.wait(/ready/);
    job = await pidIn(pidFile);
    p.kill("SIGTERM");
    const got = await p.finished();
    assert.equal(got.code, 143, got.stderr);
    await waitFor(
      `${options.what}: the background job (pid ${job}) to be gone`,
      async () => !(await running(job!)),
    );
  } finally {
    await p.stop();
    reap(job);
  }
}

Deno.test("launcher --kill-on-expiry stops CMD's whole process group, background jobs included", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  // The jobs' output goes elsewhere: a survivor holding the launcher's
  // stdout open would make this test hang instead of fail.
  const cases: [string, string, string, number][] = [
    // A shell that ignores SIGTERM (and so does its background job, which
    // inherits that): SIGKILL after the grace must reach the job too.
    [
      "ignores SIGTERM",
      "0.3",
      `trap "" TERM; sleep 30 >/dev/null 2>&1 & echo $! > "$1"; echo ready; wait`,
      137,
    ],
    // A shell that dies of SIGTERM while a job it started ignores it: the
    // job is killed as soon as the shell is gone, not after a long grace.
    [
      "leaves a job behind",
      "60",
      `sh -c 'trap "" TERM; while :; do sleep 0.05; done' >/dev/null 2>&1 & echo $! > "$1"; ` +
      "echo ready; wait",
      143,
    ],
  ];
  for (const [what, grace, script, code] of cases) {
    const pidFile = `${builder.dir}/job.pid`;
    await Deno.remove(pidFile).catch(() => {});
    let job: number | undefined;
    const p = new Proc([
      "client.ts",
      "r",
      "1",
      "1",
      "--kill-on-expiry",
      "--grace",
      grace,
      "--",
      "sh",
      "-c",
      script,
      "sh",
      pidFile,
    ], { env });
    try {
      await p.stdout.wait(/ready/);
      job = await pidIn(pidFile);
      assert.ok(await running(job), `${what}: the job runs under the lease`);
      const got = await p.finished();
      assert.equal(got.code, code, `${what}: ${got.stderr}`);
      assert.match(got.stderr, /expired while "sh"/);
      await waitFor(
        `${what}: the background job (pid ${job}) to be gone`,
        async () => !(await running(job!)),
      );
    } finally {
      await p.stop();
      reap(job);
    }
  }
});

Deno.test("launcher forwards signals to CMD's process group, and a terminal's Ctrl-C reaches CMD", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };

  // SIGTERM from ctest: CMD's background job gets it as well.
  await sigtermEndsJob(env, {
    dir: builder.dir,
    script: `sleep 30 >/dev/null 2>&1 & echo $! > "$1"; echo ready; wait`,
    what: "SIGTERM",
  });

  // Ctrl-C: the terminal signals the launcher's process group, which CMD is
  // no longer in; the launcher relays it, once.
  const fg = new Proc(["client.ts", "r", "1", "60", "--", ...TRAPPER], {
    env,
    detached: true,
  });
  try {
    await fg.stdout.wait(/ready/);
    Deno.kill(-fg.pid, "SIGINT");
    const got = await fg.finished();
    assert.equal(got.code, 5, got.stderr);
    assert.equal(got.stdout, "ready\ngot INT\n");
  } finally {
    await fg.stop();
  }
  await waitFor(
    "the lease to be released",
    async () => (await server.resource("r")).allocated === 0,
  );
});

Deno.test("launcher kills what a relayed signal left behind in CMD's group before it releases the lease", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  // CMD dies of SIGTERM, but a job it started ignores it (as a `sleep`
  // forked just before a trap runs escapes a `kill $!`): without a SIGKILL
  // it would go on using the resource after the lease is released: only
  // the launcher's SIGKILL ends it.
  await sigtermEndsJob(env, {
    dir: builder.dir,
    script:
      `sh -c 'trap "" TERM; while :; do sleep 0.05; done' >/dev/null 2>&1 & echo $! > "$1"; ` +
      "echo ready; wait",
    what: "a job that ignores SIGTERM",
  });
  await waitFor(
    "the lease to be released",
    async () => (await server.resource("r")).allocated === 0,
  );
});

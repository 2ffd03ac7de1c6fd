/**
 * The state file fails closed (issue 18, item 8): a file that cannot be
 * read or trusted means the full reclaim grace, a builder is welcomed only
 * once the file records it (a failed write is retried), and a path that is
 * not a regular file is a start-up error.  Real processes throughout.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  BuilderProc,
  Proc,
  RawBuilder,
  runClient,
  ServerProc,
  waitFor,
} from "./_harness.ts";
import { FaultProxy } from "./_proxy.ts";
import { sessionDigest } from "../src/server/state_file.ts";

const SESSION = "a-session-long-enough-0123456789";
const OTHER_SESSION = "another-session-long-enough-0123";

/** A builder grace of 2 s, so a reclaim grace of 2 s. */
const SHORT_GRACE = ["--heartbeat", "1", "--builder-grace", "2"];

/** A temp dir, removed after `fn`. */
async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sai-state-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/**
 * Makes every write of the state file `${dir}/s/state.json` fail, as on a
 * full disk (chmod does not stop root): a regular file takes the place of
 * its directory.  The returned function puts the directory back.
 */
async function breakDisk(dir: string): Promise<() => Promise<void>> {
  await Deno.rename(`${dir}/s`, `${dir}/s.away`);
  await Deno.writeTextFile(`${dir}/s`, "");
  return async () => {
    await Deno.remove(`${dir}/s`);
    await Deno.rename(`${dir}/s.away`, `${dir}/s`);
  };
}

/** Resolves with `promise`, or rejects after `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: timed out`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const isWelcome = (m: Record<string, unknown>) => "welcome" in m;

Deno.test("a state file that cannot be parsed starts the full reclaim grace, which a session-less hello cannot end", async () => {
  await withDir(async (dir) => {
    const state = `${dir}/state.json`;
    await Deno.writeTextFile(state, "{garbage");
    await using server = await ServerProc.start([
      "--resources",
      "r=2",
      "--state-file",
      state,
      ...SHORT_GRACE,
    ]);
    await server.stderr.wait(
      /WARN reclaim grace: the state file cannot be trusted .*reason=it is not JSON/,
    );
    assert.notEqual((await server.status()).reclaimUntil, null);
    // A builder without a session, claiming to have restored everything.
    await using anon = await RawBuilder.connect(server.url, { name: "anon" });
    await anon.next(isWelcome);
    // Nor may anyone restore a lease: no session is known to have held one.
    anon.send({
      resname: "r",
      cookie: "claimed",
      amount: 2,
      lease: 600,
      restore: "lease",
    });
    const refusal = await anon.next((m) => m.cookie === "claimed");
    assert.match(String(refusal.error), /could not be trusted.*lease is lost/);
    anon.send({ restored: true });
    anon.send({
      resname: "r",
      cookie: "new",
      amount: 1,
      lease: 30,
      progress: true,
    });
    await anon.next((m) => m.cookie === "new" && "queued" in m);
    const r = await server.resource("r");
    assert.equal(r.allocated, 0, "nothing new granted during the grace");
    assert.notEqual((await server.status()).reclaimUntil, null);
    // Only time ends it.
    await anon.next((m) => m.cookie === "new" && m.amount === 1);
    assert.match(server.stderr.text, /reclaim grace ended reason=time/);
    assert.doesNotMatch(server.stderr.text, /all builders restored/);
  });
});

Deno.test("an empty, oversized or wrongly shaped state file also starts the reclaim grace", async () => {
  const files: [string, string][] = [
    ["empty", ""],
    ["oversized", JSON.stringify({ clean: true }) + " ".repeat(1 << 20)],
    // Clean, it seems, but not what the server writes: not trusted.
    ["wrongly shaped", JSON.stringify({ clean: true })],
  ];
  await withDir(async (dir) => {
    for (const [what, content] of files) {
      const state = `${dir}/${what.replace(" ", "_")}.json`;
      await Deno.writeTextFile(state, content);
      await using server = await ServerProc.start([
        "--resources",
        "r=1",
        "--state-file",
        state,
        ...SHORT_GRACE,
      ]);
      await server.stderr.wait(/reclaim grace: the state file cannot be/);
      assert.notEqual((await server.status()).reclaimUntil, null, what);
    }
  });
});

Deno.test("a --state-file that is not a regular file is a start-up error naming it", async () => {
  await withDir(async (dir) => {
    const fifo = `${dir}/fifo`;
    assert.equal(
      (await new Deno.Command("mkfifo", { args: [fifo] }).output()).code,
      0,
    );
    for (
      const [path, what] of [
        // Deno lets only --allow-all open it (the unit test has that).
        ["/dev/full", "a special file (a device, or under /proc or /sys)"],
        [fifo, "a FIFO"],
        [dir, "a directory"],
      ]
    ) {
      const p = new Proc([
        "server.ts",
        "--resources",
        "r=1",
        "--listen",
        "127.0.0.1:0",
        "--state-file",
        path!,
      ]);
      try {
        // Fails here, not by hanging, if it reads the device (or the FIFO)
        // instead of refusing it.
        await within(10_000, `the server on ${path} to exit`, p.child.status);
      } finally {
        p.kill("SIGKILL");
      }
      const got = await p.finished();
      assert.equal(got.code, 1, got.stderr);
      assert.ok(
        got.stderr.includes(
          `Cannot use the state file "${path}": it is ${what}, not a regular file`,
        ),
        got.stderr,
      );
      assert.doesNotMatch(got.stdout, /listening/);
    }
  });
});

Deno.test("while the state file cannot be written a new builder is not welcomed, and once it is the builder counts in a restart's grace", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/s`);
    const args = ["--resources", "r=2", "--state-file", `${dir}/s/state.json`];
    const first = await ServerProc.start(args);
    try {
      await using proxy = new FaultProxy(first.port);
      const heal = await breakDisk(dir);
      await using raw = await RawBuilder.connect(first.url, {
        name: "raw",
        session: SESSION,
      });
      await using builder = await BuilderProc.start(first, {
        url: proxy.url,
        noWait: true,
      });
      const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };

      // Retried and logged once a second, with a count.
      const error = /(\S+) ERROR cannot write the state file .*failures=(\d+)/g;
      await first.stderr.wait(/ERROR cannot write the state file .*failures=3/);
      const lines = [...first.stderr.text.matchAll(error)];
      assert.deepEqual(
        lines.map((m) => Number(m[2])),
        lines.map((_, i) => i + 1),
        "one line per failed attempt, counted",
      );
      const spent = Date.parse(lines[2]![1]!) - Date.parse(lines[0]![1]!);
      assert.ok(spent >= 1500, `3 attempts in ${spent} ms`);
      // Not welcomed: neither the raw builder nor the real one.
      assert.equal(raw.messages.filter(isWelcome).length, 0);
      assert.deepEqual((await first.status()).builders, []);
      const refused = await runClient(["r", "1", "30", "--wait", "1"], env);
      assert.equal(refused.code, 1, refused.stderr);
      assert.equal((await first.resource("r")).allocated, 0);

      await heal();
      await raw.next(isWelcome);
      await waitFor(
        "the builder to be welcomed",
        async () => (await first.status()).builders.length === 2,
      );
      await first.stderr.wait(/INFO state file written .*failures=\d+/);
      const held = await runClient(["r", "1", "120", "held"], env);
      assert.equal(held.code, 0, held.stderr);
      const saved = JSON.parse(
        await Deno.readTextFile(`${dir}/s/state.json`),
      );
      assert.equal(saved.builders.length, 2, "both builders recorded");

      // A crash: the restart waits for both recorded builders.
      first.kill("SIGKILL");
      await first.finished();
      proxy.target = 1;
      await builder.stderr.wait(/lost the server/);
      await using second = await ServerProc.start(args);
      await second.stderr.wait(
        /reclaim grace: the last run did not end cleanly .*builders=2/,
      );
      await using late = await RawBuilder.connect(second.url, {
        name: "late",
        session: OTHER_SESSION,
      });
      await late.next(isWelcome);
      late.send({
        resname: "r",
        cookie: "new",
        amount: 1,
        lease: 30,
        progress: true,
      });
      await late.next((m) => m.cookie === "new" && "queued" in m);
      assert.equal((await second.resource("r")).allocated, 0, "not granted");
      await using back = await RawBuilder.connect(second.url, {
        name: "raw",
        session: SESSION,
      });
      await back.next(isWelcome);
      back.send({ restored: true });
      proxy.target = second.port;
      await second.stderr.wait(
        /reclaim grace ended reason=all builders restored/,
      );
      await late.next((m) => m.cookie === "new" && m.amount === 1);
      const r = await second.resource("r");
      assert.deepEqual(r.leases.map((l) => l.cookie).sort(), ["held", "new"]);
      assert.equal(r.overBudgetGrants, 0);
      assert.equal((await runClient(["--release", "held"], env)).code, 0);
    } finally {
      first.kill("SIGKILL");
      await first.finished();
    }
  });
});

Deno.test("a connection that sends too much while its hello waits for the state file is closed with 1013, and never recorded", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/s`);
    await using server = await ServerProc.start([
      "--resources",
      "r=1",
      "--state-file",
      `${dir}/s/state.json`,
    ]);
    const heal = await breakDisk(dir);
    await using flood = await RawBuilder.connect(server.url, {
      name: "flood",
      session: SESSION,
    });
    // Over 16 MiB behind the hello, in frames of at most 16 KiB.
    const big = "x".repeat(16_000);
    for (let i = 0; i < 1100; i++) flood.send(big);
    const closed = await within(20_000, "the close", flood.closed);
    assert.equal(closed.code, 1013);
    assert.match(
      server.stderr.text,
      /builder refused .*reason=too much sent before its hello was answered/,
    );
    assert.equal(flood.messages.filter(isWelcome).length, 0);

    await heal();
    await using ok = await RawBuilder.connect(server.url, {
      name: "ok",
      session: OTHER_SESSION,
    });
    await ok.next(isWelcome);
    const saved = JSON.parse(await Deno.readTextFile(`${dir}/s/state.json`));
    assert.deepEqual(saved.builders, [await sessionDigest(OTHER_SESSION)]);
  });
});

Deno.test("the state file keeps only the sessions that may hold leases", async () => {
  // Found by an adversarial review: every session ever welcomed stayed in
  // the file, so a local user saying hello 17,000 times swelled it past
  // what a restart trusts, forcing the full reclaim grace.
  await withDir(async (dir) => {
    const state = `${dir}/state.json`;
    await using server = await ServerProc.start([
      "--resources",
      "r=1",
      "--state-file",
      state,
    ]);
    await using stays = await RawBuilder.connect(server.url, {
      name: "stays",
      session: SESSION,
    });
    await stays.next(isWelcome);
    for (let i = 0; i < 20; i++) {
      const passing = await RawBuilder.connect(server.url, {
        name: `passing${i}`,
        session: `${OTHER_SESSION}-${i}`,
      });
      await passing.next(isWelcome);
      passing.ws.close();
      await passing.closed;
    }
    // Each new session's hello rewrites the file: the last one's shows
    // who is kept.
    await using last = await RawBuilder.connect(server.url, {
      name: "last",
      session: `${OTHER_SESSION}-last`,
    });
    await last.next(isWelcome);
    const written = JSON.parse(await Deno.readTextFile(state));
    assert.deepEqual(
      [...written.builders].sort(),
      [
        await sessionDigest(SESSION),
        await sessionDigest(`${OTHER_SESSION}-last`),
      ].sort(),
    );
  });
});

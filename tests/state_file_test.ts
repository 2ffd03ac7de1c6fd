/**
 * The state file fails closed (issue 18, item 8): a file that cannot be
 * read or trusted means the full reclaim grace, and a path that is not a
 * regular file is a start-up error.  Real processes throughout.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Proc, RawBuilder, ServerProc } from "./_harness.ts";

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

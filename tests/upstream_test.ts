/**
 * Our `sai-resource` against a builder that behaves as upstream Sai's does
 * (`_upstream_builder.ts`: first message only, no `expired`, no progress,
 * releases unanswered).  Every form must end in bounded time with its
 * documented exit code: nothing may wait for an answer that never comes.
 *
 * @module
 */

import assert from "node:assert/strict";
import { holderPids, killHolders, Proc, uniq, waitFor } from "./_harness.ts";
import { UpstreamBuilder } from "./_upstream_builder.ts";

/**
 * Runs `sai-resource` and fails the test if it has not exited within
 * `limitMs` (it is killed then, so a hang cannot stall the suite).
 */
async function runBounded(
  args: string[],
  limitMs: number,
): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const started = Date.now();
  const p = new Proc(["client.ts", ...args]);
  let hung = false;
  const timer = setTimeout(() => {
    hung = true;
    p.kill("SIGKILL");
  }, limitMs);
  const out = await p.finished();
  clearTimeout(timer);
  const ms = Date.now() - started;
  assert.ok(
    !hung,
    `sai-resource ${
      args.join(" ")
    } still running after ${limitMs} ms: ${out.stderr}`,
  );
  return { ...out, ms };
}

async function withBuilder(
  budgets: Record<string, number>,
  fn: (b: UpstreamBuilder) => Promise<void>,
): Promise<void> {
  await using b = await UpstreamBuilder.start(budgets);
  try {
    await fn(b);
  } finally {
    await killHolders(b.dir);
  }
}

Deno.test("upstream builder: a holder is granted, and ends its own lease at expiry", async () => {
  await withBuilder({ r: 1 }, async (b) => {
    const cookie = uniq("hold");
    const got = await runBounded(
      ["r", "1", "1", cookie, "--socket", b.socket],
      15_000,
    );
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout, `${cookie}\n`);
    assert.equal(b.allocated("r"), 1);
    const granted = Date.now();
    // No `expired` ever comes: the holder must close at LEASE (+1 s) itself.
    await waitFor("the holder to end its lease", () => b.allocated("r") === 0);
    const heldMs = Date.now() - granted;
    assert.ok(heldMs < 4000, `held ${heldMs} ms on a 1 s lease`);
    await waitFor(
      "the holder to exit",
      async () => (await holderPids(cookie, { socket: b.socket })).length === 0,
    );
  });
});

Deno.test("upstream builder: a refusal without a reason says so, exit 1", async () => {
  await withBuilder({ r: 1 }, async (b) => {
    const got = await runBounded(
      ["unknown", "1", "60", "--socket", b.socket],
      15_000,
    );
    assert.equal(got.code, 1);
    assert.equal(got.stdout, "");
    assert.match(
      got.stderr,
      /^sai-resource: refused by the server \(no reason given\)$/m,
    );
    assert.equal(b.connections, 0);
  });
});

Deno.test("upstream builder: queued with no progress, --wait withdraws, exit 1", async () => {
  await withBuilder({ r: 1 }, async (b) => {
    const first = await runBounded(
      ["r", "1", "60", "--socket", b.socket],
      15_000,
    );
    assert.equal(first.code, 0, first.stderr);
    const second = await runBounded(
      ["r", "1", "60", "--wait", "1", "--socket", b.socket],
      15_000,
    );
    assert.equal(second.code, 1);
    assert.match(second.stderr, /timed out waiting; the request was withdrawn/);
    await waitFor("the request to be withdrawn", () => b.queued === 0);
    assert.equal(b.allocated("r"), 1);
  });
});

Deno.test("upstream builder: launcher runs CMD under the lease and frees it on exit", async () => {
  await withBuilder({ r: 1 }, async (b) => {
    const got = await runBounded(
      ["r", "1", "60", "--socket", b.socket, "--", "sh", "-c", "exit 3"],
      15_000,
    );
    assert.equal(got.code, 3, got.stderr);
    await waitFor("the lease to be freed", () => b.allocated("r") === 0);
  });
});

Deno.test("upstream builder: launcher ends its lease at LEASE itself, and --kill-on-expiry stops CMD", async () => {
  await withBuilder({ r: 1 }, async (b) => {
    const got = await runBounded(
      [
        "r",
        "1",
        "1",
        "--kill-on-expiry",
        "--grace",
        "1",
        "--socket",
        b.socket,
        "--",
        "sleep",
        "30",
      ],
      15_000,
    );
    assert.equal(got.code, 143, got.stderr);
    assert.match(
      got.stderr,
      /expired while "sleep" \(pid \d+\) is still running; sending SIGTERM/,
    );
    assert.equal(b.allocated("r"), 0);
  });
});

Deno.test("upstream builder: --foreground ends its own lease at expiry, keeps running until signalled", async () => {
  await withBuilder({ r: 1 }, async (b) => {
    const cookie = uniq("fg");
    const fg = new Proc([
      "client.ts",
      "r",
      "1",
      "1",
      cookie,
      "--foreground",
      "--socket",
      b.socket,
    ]);
    try {
      await fg.stdout.wait(new RegExp(`^${cookie}$`, "m"));
      assert.equal(b.allocated("r"), 1);
      // No `expired` ever comes: at LEASE (+1 s) it closes its connection,
      // which frees the lease upstream, warns, and goes on running.
      await fg.stderr.wait(
        /has run out \(LEASE_SECONDS passed\).*still running until signalled/,
      );
      await waitFor("the lease to be freed", () => b.allocated("r") === 0);
      assert.equal(b.connections, 0);
      fg.kill("SIGTERM");
      const got = await fg.finished();
      assert.equal(got.code, 0, got.stderr);
    } finally {
      fg.kill("SIGKILL");
      await fg.finished();
    }
    // Refused (no reason) and timed out in the queue: exit 1, bounded.
    const refused = await runBounded(
      ["unknown", "1", "60", "--foreground", "--socket", b.socket],
      15_000,
    );
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /refused by the server \(no reason given\)/);
    const holder = await runBounded(
      ["r", "1", "60", "--socket", b.socket],
      15_000,
    );
    assert.equal(holder.code, 0, holder.stderr);
    const queued = await runBounded(
      ["r", "1", "60", "--foreground", "--wait", "1", "--socket", b.socket],
      15_000,
    );
    assert.equal(queued.code, 1);
    assert.match(queued.stderr, /timed out waiting; the request was withdrawn/);
  });
});

Deno.test("upstream builder: --release and --release-scope give up with exit 1 and say why", async () => {
  await withBuilder({ r: 2 }, async (b) => {
    const cookie = uniq("rel");
    const held = await runBounded([
      "r",
      "1",
      "60",
      cookie,
      "--socket",
      b.socket,
    ], 15_000);
    assert.equal(held.code, 0, held.stderr);
    const scope = uniq("scope");
    const scoped = await runBounded(
      ["r", "1", "60", "--scope", scope, "--socket", b.socket],
      15_000,
    );
    assert.equal(scoped.code, 0, scoped.stderr);
    for (
      const args of [["--release", cookie], ["--release-scope", scope]]
    ) {
      const got = await runBounded(
        [...args, "--wait", "1", "--socket", b.socket],
        15_000,
      );
      assert.equal(got.code, 1, got.stderr);
      assert.equal(got.stdout, "");
      assert.match(
        got.stderr,
        /the builder did not answer within 1 s; upstream Sai builders cannot release by cookie: end the holder process instead, or use launcher \(-- CMD\) or --foreground mode/,
      );
    }
    assert.equal(b.releasesIgnored, 2);
    // Upstream cannot release by cookie: both leases are still held, and
    // ending the holder is what frees them.
    assert.equal(b.allocated("r"), 2);
    await killHolders(b.dir);
    await waitFor("the holders' leases to end", () => b.allocated("r") === 0);
  });
});

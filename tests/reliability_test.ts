import assert from "node:assert/strict";
import {
  BuilderProc,
  holderPids,
  Proc,
  runClient,
  ServerProc,
  waitFor,
} from "./_harness.ts";
import { FaultProxy } from "./_proxy.ts";

async function leaseCookies(
  server: ServerProc,
  name: string,
): Promise<string[]> {
  return (await server.resource(name)).leases.map((l) => l.cookie).sort();
}

Deno.test("a builder reconnects through a cut link and restores its lease without counting it twice", async () => {
  await using server = await ServerProc.start(["--resources", "r=3"]);
  await using proxy = new FaultProxy(server.port);
  await using builder = await BuilderProc.start(server, { url: proxy.url });
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "2", "60", "kept"], env)).code, 0);
  const waiter = new Proc(["client.ts", "r", "2", "60", "waiter"], { env });
  await waiter.stderr.wait(/queued for r: position 1/);
  const [holder] = await holderPids("kept", builder);

  proxy.cut();
  await waitFor("the builder to reconnect", () => proxy.accepted >= 2);
  await waitFor("the lease and the queued request to be restored", async () => {
    const r = await server.resource("r");
    return r.allocated === 2 &&
      r.queue.map((q) => q.cookie).join() === "waiter";
  });
  const r = await server.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), ["kept"]);
  assert.equal(r.overBudgetGrants, 0);
  assert.deepEqual(
    await holderPids("kept", builder),
    [holder],
    "the holder never noticed",
  );
  assert.equal((await server.status()).builders.length, 1);

  assert.equal((await runClient(["--release", "kept"], env)).code, 0);
  assert.equal((await waiter.finished()).code, 0);
  assert.deepEqual(await leaseCookies(server, "r"), ["waiter"]);
});

Deno.test("after a server restart, builders restore leases and queued requests in order", async () => {
  // fifo: the order after the restore is then the whole story.
  const first = await ServerProc.start([
    "--resources",
    "r=2",
    "--policy",
    "fifo",
  ]);
  await using proxy = new FaultProxy(first.port);
  await using builder = await BuilderProc.start(first, { url: proxy.url });
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "2", "120", "held"], env)).code, 0);
  const waiters: Proc[] = [];
  for (const [cookie, amount] of [["q1", "1"], ["q2", "2"], ["q3", "1"]]) {
    const p = new Proc(["client.ts", "r", amount!, "60", cookie!], { env });
    await p.stderr.wait(/queued for r: position \d/);
    waiters.push(p);
  }
  const [holder] = await holderPids("held", builder);

  first.kill("SIGKILL");
  await first.finished();
  await using second = await ServerProc.start([
    "--resources",
    "r=2",
    "--policy",
    "fifo",
  ]);
  proxy.target = second.port;
  await waitFor("the restore on the new server", async () => {
    const r = await second.resource("r");
    return r.allocated === 2 && r.queue.length === 3;
  }, 15_000);
  const r = await second.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), ["held"]);
  assert.deepEqual(
    r.queue.map((q) => q.cookie),
    ["q1", "q2", "q3"],
    "original order",
  );
  assert.deepEqual(await holderPids("held", builder), [holder]);

  assert.equal((await runClient(["--release", "held"], env)).code, 0);
  assert.equal((await waiters[0]!.finished()).code, 0);
  // q2 (2) is now the head and does not fit beside q1: q3 must not overtake.
  const after = await second.resource("r");
  assert.deepEqual(after.queue.map((q) => q.cookie), ["q2", "q3"]);
  for (const w of waiters.slice(1)) w.kill("SIGKILL");
  await Promise.all(waiters.slice(1).map((w) => w.finished()));
});

Deno.test("a builder cut off from the server fences its holders before the server gives their units away", async () => {
  // Heartbeat 1 s, builder grace 6 s: the builder fences after 4 s without
  // a round trip, the server frees the units 6 s after it last heard it.
  await using server = await ServerProc.start([
    "--resources",
    "r=2",
    "--heartbeat",
    "1",
    "--builder-grace",
    "6",
  ]);
  await using proxy = new FaultProxy(server.port);
  await using far = await BuilderProc.start(server, {
    url: proxy.url,
    name: "far",
    args: ["--heartbeat", "1"],
  });
  await using near = await BuilderProc.start(server, { name: "near" });
  const farEnv = { SAI_BUILDER_RESOURCE_PROXY: far.socket };
  const nearEnv = { SAI_BUILDER_RESOURCE_PROXY: near.socket };
  assert.equal(
    (await runClient(["r", "2", "60", "far-lease"], farEnv)).code,
    0,
  );
  assert.equal((await holderPids("far-lease", far)).length, 1);

  // Cut the far builder off and keep it off.
  proxy.target = 1;
  proxy.cut();
  const waiter = new Proc(["client.ts", "r", "2", "60", "near-lease"], {
    env: nearEnv,
  });
  await waiter.stderr.wait(/queued for r: position 1/);
  await far.stderr.wait(/fenced: lease lost cookie=far-lease/, 15_000);
  // Told before the server lets the units go: still counted there.
  const during = await server.resource("r");
  assert.deepEqual(during.leases.map((l) => l.cookie), ["far-lease"]);
  assert.equal(during.queuedRequests, 1);
  await waitFor(
    "the fenced holder to exit",
    async () => (await holderPids("far-lease", far)).length === 0,
  );
  assert.equal((await waiter.finished()).code, 0);
  await server.stderr.wait(
    /builder gone: leases dropped after the builder grace/,
  );
  const r = await server.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), ["near-lease"]);
  assert.equal(r.peak, 2);
  assert.equal(r.overBudgetGrants, 0);
  const { stats } = await server.status();
  assert.equal(stats.drops, 1);
});

Deno.test("a blackholed link is detected by the heartbeat on both sides", async () => {
  // The server's heartbeat is the shorter, so it sees the silence before
  // the builder comes back on a new connection.
  await using server = await ServerProc.start([
    "--resources",
    "r=1",
    "--heartbeat",
    "1",
    "--builder-grace",
    "10",
  ]);
  await using proxy = new FaultProxy(server.port);
  await using builder = await BuilderProc.start(server, {
    url: proxy.url,
    args: ["--heartbeat", "2"],
  });
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "1", "60", "hb"], env)).code, 0);
  proxy.blackhole();
  await builder.stderr.wait(
    /lost the server reason=no answer for \d+ s/,
    10_000,
  );
  await server.stderr.wait(/builder disconnected/, 10_000);
  await waitFor("a new connection and the restore", async () => {
    const doc = await server.status();
    return proxy.accepted >= 2 && doc.builders.length === 1 &&
      doc.resources[0]!.leases.map((l) => l.cookie).join() === "hb";
  }, 10_000);
  assert.equal((await holderPids("hb", builder)).length, 1);
});

Deno.test("a lease that expired while the link was down is ended by the builder, not restored", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using proxy = new FaultProxy(server.port);
  await using builder = await BuilderProc.start(server, { url: proxy.url });
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "1", "1", "brief"], env)).code, 0);
  proxy.target = 1;
  proxy.cut();
  await waitFor(
    "the holder to exit at the end of its lease",
    async () => (await holderPids("brief", builder)).length === 0,
    10_000,
  );
  proxy.target = server.port;
  await waitFor(
    "the builder to reconnect",
    async () => (await server.status()).builders.length === 1,
    15_000,
  );
  const r = await server.resource("r");
  assert.equal(r.allocated, 0);
  assert.equal(r.leases.length, 0);
});

Deno.test("a release lost in a silent link is dropped when the builder reconnects", async () => {
  // The server would wait 30 s to see the old link die; the builder sees the
  // silence after 1 s and reconnects under the same session first.
  await using server = await ServerProc.start([
    "--resources",
    "r=2",
    "--heartbeat",
    "30",
  ]);
  await using proxy = new FaultProxy(server.port);
  await using builder = await BuilderProc.start(server, {
    url: proxy.url,
    args: ["--heartbeat", "1"],
  });
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "1", "300", "stale"], env)).code, 0);
  assert.equal((await runClient(["r", "1", "300", "keep"], env)).code, 0);
  proxy.blackhole();
  // The builder ends the holder and yields, into the void.
  assert.equal((await runClient(["--release", "stale"], env)).code, 0);
  await server.stderr.wait(
    /dropped after reconnect: not restored builder=\S+ cookie=stale/,
    10_000,
  );
  const r = await server.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), ["keep"]);
  assert.equal(r.allocated, 1);
  assert.equal((await server.status()).builders.length, 1);
});

import assert from "node:assert/strict";
import { acquire } from "../src/client/lease_client.ts";
import { parseCommand } from "../src/client/client_args.ts";
import { BuilderProc, runClient, ServerProc, waitFor } from "./_harness.ts";

const env = {
  get: (k: string) => k === "SAI_BUILDER_RESOURCE_PROXY" ? "/s" : undefined,
};

Deno.test("parseCommand() reads NAME=AMOUNT,NAME=AMOUNT LEASE_SECONDS [COOKIE]", () => {
  const cmd = parseCommand(["warmcat_conns=2,db=1", "30", "ck"], env);
  assert.equal(cmd.kind, "acquire");
  assert.deepEqual(cmd.kind === "acquire" && cmd.spec, {
    resname: "warmcat_conns",
    amount: 2,
    lease: 30,
    cookie: "ck",
    resources: [
      { resname: "warmcat_conns", amount: 2 },
      { resname: "db", amount: 1 },
    ],
  });
  const single = parseCommand(["db=3", "30"], env);
  assert.equal(single.kind === "acquire" && single.spec.amount, 3);
  assert.equal(single.kind === "acquire" && single.spec.resources, undefined);
  for (
    const bad of [
      ["a=1,a=2", "30"],
      ["a=0,b=1", "30"],
      ["a=1,b c=1", "30"],
      ["a=1,b=1", "30", "ck", "extra"],
      ["a=1,b=1"],
    ]
  ) {
    assert.throws(() => parseCommand(bad, env), TypeError, bad.join(" "));
  }
});

Deno.test("a multi-resource lease through builder and server is all or nothing", async () => {
  await using server = await ServerProc.start(["--resources", "a=2,b=2"]);
  await using builder = await BuilderProc.start(server);
  const hold = await acquire(builder.socket, {
    resname: "a",
    amount: 2,
    lease: 60,
    cookie: "hold",
  });
  const resources = [{ resname: "a", amount: 1 }, { resname: "b", amount: 2 }];
  const multi = acquire(builder.socket, {
    resname: "a",
    amount: 1,
    lease: 60,
    cookie: "multi",
    resources,
  });
  await waitFor(
    "the multi request to queue on both",
    async () =>
      (await server.resource("a")).queuedRequests === 1 &&
      (await server.resource("b")).queuedRequests === 1,
  );
  assert.equal((await server.resource("b")).allocated, 0, "nothing held");
  hold.release();
  const lease = await multi;
  assert.deepEqual(lease.grant.resources, resources);
  assert.equal((await server.resource("a")).allocated, 1);
  assert.equal((await server.resource("b")).allocated, 2);
  lease.release();
  await waitFor(
    "both freed",
    async () => (await server.resource("b")).allocated === 0,
  );
});

Deno.test("a priority request queues behind the head, ahead of lower priorities", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const hold = await acquire(builder.socket, {
    resname: "r",
    amount: 1,
    lease: 60,
    cookie: "hold",
  });
  const queued = [];
  for (
    const [cookie, priority] of [["head", 0], ["low", 0], ["high", 7]] as const
  ) {
    queued.push(
      acquire(builder.socket, {
        resname: "r",
        amount: 1,
        lease: 60,
        cookie,
        priority,
      }),
    );
    await waitFor(
      `${cookie} to queue`,
      async () =>
        (await server.resource("r")).queue.some((q) => q.cookie === cookie),
    );
  }
  assert.deepEqual(
    (await server.resource("r")).queue.map((q) => q.cookie),
    ["head", "high", "low"],
  );
  hold.release();
  const leases = [await queued[0]!];
  leases[0]!.release();
  leases.push(await queued[2]!);
  assert.equal(leases[1]!.grant.cookie, "high");
  leases[1]!.release();
  (await queued[1]!).release();
});

Deno.test("sai-resource NAME=AMOUNT,NAME=AMOUNT holds every resource", async () => {
  await using server = await ServerProc.start(["--resources", "a=2,b=2"]);
  await using builder = await BuilderProc.start(server);
  const out = await runClient(["a=1,b=2", "60", "both", "--quiet"], {
    SAI_BUILDER_RESOURCE_PROXY: builder.socket,
  });
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout, "both\n");
  assert.equal((await server.resource("a")).allocated, 1);
  assert.equal((await server.resource("b")).allocated, 2);
  const rel = await runClient(["--release", "both"], {
    SAI_BUILDER_RESOURCE_PROXY: builder.socket,
  });
  assert.equal(rel.code, 0, rel.stderr);
  await waitFor(
    "both freed",
    async () => (await server.resource("b")).allocated === 0,
  );
});

Deno.test("parseCommand() reads --priority N", () => {
  const cmd = parseCommand(["r", "1", "30", "--priority=-3"], env);
  assert.equal(cmd.kind === "acquire" && cmd.spec.priority, -3);
  for (const bad of ["1.5", "1001", "x"]) {
    assert.throws(
      () => parseCommand(["r", "1", "30", "--priority", bad], env),
      TypeError,
    );
  }
});

Deno.test("sai-resource --priority N queues behind the head, ahead of priority 0", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const hold = await acquire(builder.socket, {
    resname: "r",
    amount: 1,
    lease: 60,
    cookie: "hold",
  });
  const queued = [];
  for (const cookie of ["head", "low"]) {
    queued.push(
      acquire(builder.socket, { resname: "r", amount: 1, lease: 60, cookie }),
    );
    await waitFor(
      `${cookie} to queue`,
      async () =>
        (await server.resource("r")).queue.some((q) => q.cookie === cookie),
    );
  }
  const cli = runClient(["r", "1", "60", "vip", "--priority", "5", "--quiet"], {
    SAI_BUILDER_RESOURCE_PROXY: builder.socket,
  });
  await waitFor(
    "vip to queue",
    async () => (await server.resource("r")).queue.length === 3,
  );
  assert.deepEqual(
    (await server.resource("r")).queue.map((q) => q.cookie),
    ["head", "vip", "low"],
  );
  hold.release();
  (await queued[0]!).release();
  const out = await cli;
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout, "vip\n");
  await runClient(["--release", "vip"], {
    SAI_BUILDER_RESOURCE_PROXY: builder.socket,
  });
  (await queued[1]!).release();
});

Deno.test("a queued multi-resource request gets one position and the later ETA, not one per queue", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "a=1,b=1,c=1",
    "--policy",
    "fifo",
  ]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const held = [];
  held.push(
    await acquire(builder.socket, {
      resname: "a",
      amount: 1,
      lease: 60,
      cookie: "ha",
    }),
    await acquire(builder.socket, {
      resname: "b",
      amount: 1,
      lease: 120,
      cookie: "hb",
    }),
  );
  const queued: string[] = [];
  const waiter = acquire(builder.socket, {
    resname: "a",
    amount: 1,
    lease: 10,
    cookie: "both",
    resources: [{ resname: "a", amount: 1 }, { resname: "b", amount: 1 }],
  }, { onQueued: (q) => queued.push(`${q.position}@${q.eta}`) });
  // If an assertion fails first, the server's teardown rejects these.
  waiter.catch(() => {});
  await waitFor("the progress message", () => queued.length > 0);
  // Churn on another resource, and another request queued behind on b, must
  // not make it flap between a's and b's figures.
  for (let i = 0; i < 5; i++) {
    const c = await acquire(builder.socket, {
      resname: "c",
      amount: 1,
      lease: 5,
      cookie: `c${i}`,
    });
    c.release();
  }
  // A request queued behind it on b: its own position arrives in a push
  // that also looks again at "both" (b changed), so any flap shows by then.
  const { promise: behindQueued, resolve } = Promise.withResolvers<void>();
  const behind = acquire(builder.socket, {
    resname: "b",
    amount: 1,
    lease: 5,
    cookie: "behind",
  }, { onQueued: () => resolve() });
  behind.catch(() => {});
  await behindQueued;
  assert.equal(queued.length, 1, `got ${queued.join(", ")}`);
  const [position, eta] = queued[0]!.split("@").map(Number);
  assert.equal(position, 1);
  assert.ok(eta! > 100, `the ETA is b's (120 s), got ${eta}`);
  for (const h of held) h.release();
  (await waiter).release();
  (await behind).release();
  const cli = await runClient(["a=1,b=1", "10", "--quiet"], env);
  assert.equal(cli.code, 0, cli.stderr);
});

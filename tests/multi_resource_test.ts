import assert from "node:assert/strict";
import { acquire } from "../src/lease_client.ts";
import { parseCommand } from "../src/client_cli.ts";
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

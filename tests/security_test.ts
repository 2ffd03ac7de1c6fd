import assert from "node:assert/strict";
import {
  BuilderProc,
  cRequest,
  Proc,
  RawBuilder,
  RawClient,
  runClient,
  ServerProc,
  waitFor,
} from "./_harness.ts";
import { connectUnix } from "../src/client/lease_client.ts";
import { makeCertificates } from "./_certs.ts";

const GOOD = "b1-token-0123456789abcdef";
const SHARED = "shared-token-fedcba9876543210";

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "sai-sec-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("builders must present a valid token when the server has --builder-tokens", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/tokens`,
      `# builders\nb1:${GOOD}\n${SHARED}\n`,
    );
    await Deno.writeTextFile(`${dir}/good`, GOOD + "\n");
    await Deno.writeTextFile(`${dir}/wrong`, "not-the-token-at-all-000\n");
    await using server = await ServerProc.start([
      "--resources",
      "r=1",
      "--builder-tokens",
      `${dir}/tokens`,
    ]);
    // The right token for its name, and a shared token for any name.
    await using ok = await BuilderProc.start(server, {
      args: ["--token-file", `${dir}/good`],
    });
    assert.equal(
      (await runClient(["r", "1", "30", "--quiet"], {
        SAI_BUILDER_RESOURCE_PROXY: ok.socket,
      })).code,
      0,
    );

    // b1's token under another name, a wrong token, and none at all.
    for (
      const [name, args] of [
        ["b2", ["--token-file", `${dir}/good`]],
        ["b3", ["--token-file", `${dir}/wrong`]],
        ["b4", []],
      ] as [string, string[]][]
    ) {
      await using bad = await BuilderProc.start(server, {
        name,
        args,
        noWait: true,
      });
      // Refused at the hello, well inside the 5 s hello timeout.
      await bad.stderr.wait(
        /refused by the server: authentication failed/,
        4_000,
      );
      assert.doesNotMatch(bad.stderr.text, /connected to server/);
    }
    await server.stderr.wait(
      /builder refused .*name=b4 reason=authentication failed: no token/,
    );
    assert.deepEqual((await server.status()).builders.map((b) => b.name), [
      "b1",
    ]);
    assert.doesNotMatch(server.stderr.text, new RegExp(GOOD));
    assert.doesNotMatch(server.stderr.text, /not-the-token-at-all/);
  });
});

Deno.test("without --builder-tokens the server only listens on loopback", async () => {
  const got = await new Proc([
    "server.ts",
    "--resources",
    "r=1",
    "--listen",
    "0.0.0.0:0",
  ]).finished();
  assert.equal(got.code, 2);
  assert.match(
    got.stderr,
    /Cannot listen on "0\.0\.0\.0" without builder authentication/,
  );
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await server.stderr.wait(/no builder authentication .*loopback only/);
});

Deno.test("a bad token file is a start-up error that does not print the tokens", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/tokens`, "short\n");
    const got = await new Proc([
      "server.ts",
      "--resources",
      "r=1",
      "--builder-tokens",
      `${dir}/tokens`,
    ]).finished();
    assert.equal(got.code, 2);
    assert.match(got.stderr, /line 1 is shorter than 16 characters/);
    assert.doesNotMatch(got.stderr, /short\b(?! than)/);
  });
});

Deno.test("TLS: the builder connects over wss:// trusting the server's certificate with --ca", async () => {
  await withTempDir(async (dir) => {
    await makeCertificates(dir);
    const server = new ServerProcTls([
      "server.ts",
      "--resources",
      "r=1",
      "--listen",
      "127.0.0.1:0",
      "--cert",
      `${dir}/cert.pem`,
      "--key",
      `${dir}/key.pem`,
    ]);
    try {
      const [, url] = await server.stdout.wait(
        /listening on (wss:\/\/127\.0\.0\.1:(\d+))/,
      );
      const untrusted = new Proc([
        "builder.ts",
        "--server",
        url!,
        "--socket",
        `${dir}/u.sock`,
        "--name",
        "u",
      ]);
      await untrusted.stderr.wait(/cannot connect to server/);
      await untrusted.stop();

      const builder = new Proc([
        "builder.ts",
        "--server",
        url!,
        "--socket",
        `${dir}/b.sock`,
        "--name",
        "tls",
        "--ca",
        `${dir}/ca.pem`,
      ]);
      try {
        await builder.stderr.wait(/connected to server/);
        const got = await runClient(["r", "1", "30", "tls-lease"], {
          SAI_BUILDER_RESOURCE_PROXY: `${dir}/b.sock`,
        });
        assert.equal(got.code, 0, got.stderr);
        await server.stderr.wait(/granted builder=\S+ cookie=tls-lease/);
      } finally {
        await builder.stop();
      }
    } finally {
      await server.stop();
    }
  });
});

class ServerProcTls extends Proc {}

Deno.test("a builder can yield only its own cookies", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using owner = await RawBuilder.connect(server.url, { name: "owner" });
  await using thief = await RawBuilder.connect(server.url, { name: "thief" });
  owner.send({ resname: "r", cookie: "mine", amount: 2, lease: 60 });
  await owner.next((m) => m.cookie === "mine" && m.amount === 2);
  thief.send({ cookie: "mine" });
  // The thief's own request proves its yield was processed first.
  thief.send({ resname: "r", cookie: "probe", amount: 1, lease: 60 });
  await waitFor(
    "the probe to queue",
    async () => (await server.resource("r")).queuedRequests === 1,
  );
  const r = await server.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), ["mine"]);
  assert.equal(r.allocated, 2);
});

Deno.test("--socket-group opens the socket to a group: 0770 directory, 0660 socket", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  const gid = Deno.gid()!;
  await withTempDir(async (parent) => {
    const dir = `${parent}/grp`;
    await using builder = await BuilderProc.start(server, {
      dir,
      args: ["--socket-group", String(gid)],
    });
    const d = await Deno.stat(dir);
    const s = await Deno.stat(builder.socket);
    assert.equal(d.mode! & 0o777, 0o770);
    assert.equal(s.mode! & 0o777, 0o660);
    assert.equal(s.gid, gid);
    const got = await new Proc([
      "builder.ts",
      "--server",
      server.url,
      "--socket",
      `${parent}/x.sock`,
      "--socket-group",
      "no-such-group-here",
    ]).finished();
    assert.equal(got.code, 2);
    assert.match(got.stderr, /no group named "no-such-group-here"/);
  });
});

Deno.test("hostile WebSocket input gets an error and leaves the builder's leases alone", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using b = await RawBuilder.connect(server.url, { name: "hostile" });
  b.send({ resname: "r", cookie: "keep", amount: 1, lease: 60 });
  await b.next((m) => m.cookie === "keep" && m.amount === 1);
  const bad: [string, RegExp][] = [
    ["{not json", /not valid JSON/],
    ["42", /not a JSON object/],
    ['{"schema":"nope","cookie":"x"}', /"schema" must be/],
    [
      JSON.stringify({
        schema: "com-warmcat-sai-resource",
        resname: "r",
        cookie: "t",
        amount: "1",
        lease: 1,
      }),
      /"amount" must be a positive integer/,
    ],
    [
      JSON.stringify({
        schema: "com-warmcat-sai-resource",
        resname: "r",
        cookie: "m",
        amount: 1,
      }),
      /"lease" must be a positive integer/,
    ],
    [
      JSON.stringify({
        schema: "com-warmcat-sai-resource",
        resname: "r",
        cookie: "z",
        amount: 0,
        lease: 1,
      }),
      /"amount" must be a positive integer, got 0/,
    ],
    [
      JSON.stringify({
        schema: "com-warmcat-sai-resource",
        resname: "r",
        cookie: "n",
        amount: -5,
        lease: 1,
      }),
      /got -5/,
    ],
    [
      JSON.stringify({
        schema: "com-warmcat-sai-resource",
        resname: "r",
        cookie: "h",
        amount: 2 ** 40,
        lease: 1,
      }),
      /"amount" must be a positive integer/,
    ],
    [
      JSON.stringify({
        schema: "com-warmcat-sai-resource",
        resname: "r\u0007",
        cookie: "c",
        amount: 1,
        lease: 1,
      }),
      /"resname" must match/,
    ],
    [
      JSON.stringify({
        schema: "com-warmcat-sai-resource",
        resname: "r",
        cookie: "bad\u0001",
        amount: 1,
        lease: 1,
      }),
      /"cookie" must be/,
    ],
    [
      JSON.stringify({
        schema: "com-warmcat-sai-resource",
        resname: "r",
        cookie: "rs",
        amount: 1,
        lease: 1,
        restore: "yes",
      }),
      /"restore" must be/,
    ],
  ];
  for (const [text, re] of bad) {
    const before = b.messages.length;
    b.send(text);
    const m = await b.next((m) =>
      b.messages.indexOf(m) >= before && typeof m.error === "string"
    );
    assert.match(m.error as string, re, text.slice(0, 60));
    assert.equal(m.amount, undefined);
  }
  assert.equal(
    b.ws.readyState,
    WebSocket.OPEN,
    "text errors do not close the link",
  );
  const r = await server.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), ["keep"]);
  assert.equal(r.queuedRequests, 0);

  // A binary frame closes that link (and frees its lease), nobody else's.
  await using other = await RawBuilder.connect(server.url, { name: "other" });
  other.send({ resname: "r", cookie: "theirs", amount: 1, lease: 60 });
  await other.next((m) => m.cookie === "theirs" && m.amount === 1);
  b.ws.send(new Uint8Array([1, 2, 3]));
  const ev = await b.closed;
  assert.equal(ev.code, 1008);
  assert.match(ev.reason, /binary frames are not accepted/);
  await waitFor(
    "only the other lease to remain",
    async () =>
      (await server.resource("r")).leases.map((l) => l.cookie).join() ===
        "theirs",
  );
});

Deno.test("a client cannot claim a restore to bypass the budget", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  await using c = await RawClient.connect(builder.socket);
  await c.send(
    '{"schema":"com-warmcat-sai-resource","resname":"r","cookie":"sneaky","amount":1,"lease":5,"restore":"lease"}',
  );
  const reply = JSON.parse(await c.closedByPeer());
  assert.match(reply.error, /"restore" is only accepted from a builder/);
  assert.equal((await server.resource("r")).allocated, 0);
});

Deno.test("the per-builder queue limit refuses with the limit named", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "r=1",
    "--max-queued-per-builder",
    "3",
  ]);
  await using b = await RawBuilder.connect(server.url, { name: "greedy" });
  b.send({ resname: "r", cookie: "held", amount: 1, lease: 60 });
  for (let i = 0; i < 4; i++) {
    b.send({ resname: "r", cookie: `q${i}`, amount: 1, lease: 60 });
  }
  const refusal = await b.next((m) => m.cookie === "q3");
  assert.match(
    refusal.error as string,
    /already has 3 requests queued \(the per-builder limit\)/,
  );
  const r = await server.resource("r");
  assert.deepEqual(r.queue.map((q) => q.cookie), ["q0", "q1", "q2"]);
  // Another builder is not limited by this one's queue.
  await using polite = await RawBuilder.connect(server.url, { name: "polite" });
  polite.send({ resname: "r", cookie: "p", amount: 1, lease: 60 });
  await waitFor(
    "the other builder's request to queue",
    async () => (await server.resource("r")).queuedRequests === 4,
  );
});

Deno.test("a request that never completes is dropped after the request timeout", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server, {
    args: ["--request-timeout", "0.3"],
  });
  await using c = await RawClient.connect(builder.socket);
  await c.send('{"schema":"com-warmcat-sai-resource","resname":');
  const reply = JSON.parse(await c.closedByPeer(5_000));
  assert.match(reply.error, /No request within the time limit/);
  // The builder still serves others.
  await using ok = await RawClient.connect(builder.socket);
  await ok.send(cRequest("r", "after", 1, 10));
  await ok.until((t) => t.includes('"amount":1'));
});

Deno.test("thousands of connections opened and dropped leave nothing behind", async () => {
  await using server = await ServerProc.start(["--resources", "r=4"]);
  await using builder = await BuilderProc.start(server);
  for (let batch = 0; batch < 100; batch++) {
    await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const conn = await connectUnix(builder.socket);
      // Every other one sends a request first, then drops mid-flight.
      if (i % 2 === 0) {
        await conn.write(
          new TextEncoder().encode(cRequest("r", `churn-${batch}-${i}`, 1, 30)),
        );
      }
      conn.close();
    }));
  }
  await waitFor("every churned request to be yielded", async () => {
    const r = await server.resource("r");
    return r.allocated === 0 && r.queuedRequests === 0;
  }, 20_000);
  await using c = await RawClient.connect(builder.socket);
  await c.send(cRequest("r", "still-works", 4, 10));
  await c.until((t) => t.includes('"amount":4'));
  assert.equal((await server.resource("r")).overBudgetGrants, 0);
});

Deno.test("hundreds of WebSocket connections opened and dropped leave the server serving", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  for (let batch = 0; batch < 10; batch++) {
    await Promise.all(Array.from({ length: 50 }, async (_, i) => {
      // Half say hello and ask for a lease before dropping.
      const b = await RawBuilder.connect(
        server.url,
        i % 2 ? false : { name: `churn${i}` },
      );
      if (i % 2 === 0) {
        b.send({
          resname: "r",
          cookie: `c${batch}-${i}`,
          amount: 1,
          lease: 30,
        });
      }
      await b[Symbol.asyncDispose]();
    }));
  }
  await waitFor("every dropped builder's request to be freed", async () => {
    const doc = await server.status();
    return doc.builders.length === 0 && doc.resources[0]!.allocated === 0 &&
      doc.resources[0]!.queuedRequests === 0;
  });
  await using b = await RawBuilder.connect(server.url, { name: "after" });
  b.send({ resname: "r", cookie: "ok", amount: 2, lease: 30 });
  await b.next((m) => m.cookie === "ok" && m.amount === 2);
});

Deno.test("a builder whose token is refused retries slowly, not in a tight loop", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/tokens`, `${SHARED}\n`);
    await Deno.writeTextFile(`${dir}/wrong`, "not-the-token-at-all-000\n");
    await using server = await ServerProc.start([
      "--resources",
      "r=1",
      "--builder-tokens",
      `${dir}/tokens`,
    ]);
    await using bad = await BuilderProc.start(server, {
      args: ["--token-file", `${dir}/wrong`],
      noWait: true,
    });
    const refusals =
      /(\S+) ERROR cannot connect to server .*authentication failed/g;
    await bad.stderr.wait(
      /authentication failed[^]*authentication failed/,
      15_000,
    );
    const [first, second] = [...bad.stderr.text.matchAll(refusals)].map((m) =>
      Date.parse(m[1]!)
    );
    // The backoff jumps to its cap (5 s, jittered down to half).
    assert.ok(
      second! - first! >= 2_000,
      `retried after ${second! - first!} ms`,
    );
  });
});

Deno.test("a builder session cannot be taken over, and is never published", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using owner = await RawBuilder.connect(server.url, {
    name: "owner",
    session: "secret-session-1",
  });
  owner.send({ resname: "r", cookie: "mine", amount: 2, lease: 60 });
  await owner.next((m) => m.cookie === "mine" && m.amount === 2);
  const welcome = await owner.next((m) => m.welcome !== undefined);
  const doc = await server.status();
  assert.doesNotMatch(JSON.stringify(doc), /secret-session-1/);
  assert.deepEqual(doc.builders.map((b) => b.id), [
    (welcome.welcome as { id: string }).id,
  ]);
  assert.equal(doc.resources[0]!.leases[0]!.owner, doc.builders[0]!.id);

  // Same session, another name: refused; the owner keeps its link and lease.
  await using thief = await RawBuilder.connect(server.url, {
    name: "thief",
    session: "secret-session-1",
  });
  thief.send({ cookie: "mine" });
  const ev = await thief.closed;
  assert.equal(ev.code, 1008);
  assert.match(ev.reason, /this session belongs to another builder/);
  assert.equal(owner.ws.readyState, WebSocket.OPEN);
  const r = await server.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), ["mine"]);
  assert.doesNotMatch(server.stderr.text, /secret-session-1/);
});

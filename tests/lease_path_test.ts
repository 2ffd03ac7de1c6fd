import assert from "node:assert/strict";
import {
  BuilderProc,
  cRequest,
  holderPids,
  Proc,
  RawBuilder,
  RawClient,
  runClient,
  ServerProc,
  uniq,
  waitFor,
} from "./_harness.ts";
import { acquire } from "../src/client/lease_client.ts";

Deno.test("sai-resource exits 0 on a grant and the holder keeps the lease until released", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "warmcat_conns=4",
  ]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };

  const got = await runClient(["warmcat_conns", "3", "60", "cookie-a"], env);
  assert.equal(got.code, 0, got.stderr);
  assert.equal(got.stdout, "cookie-a\n");
  assert.match(got.stderr, /granted 3 of warmcat_conns for 60 s/);

  // The caller has exited; the detached holder still holds the lease.
  const res = await server.resource("warmcat_conns");
  assert.equal(res.allocated, 3);
  assert.deepEqual(res.leases.map((l) => l.cookie), ["cookie-a"]);
  assert.equal((await holderPids("cookie-a", builder)).length, 1);

  const rel = await runClient(["--release", "cookie-a"], env);
  assert.equal(rel.code, 0, rel.stderr);
  await waitFor(
    "the lease to be freed",
    async () => (await server.resource("warmcat_conns")).allocated === 0,
  );
  await waitFor(
    "the holder to exit",
    async () => (await holderPids("cookie-a", builder)).length === 0,
  );

  const again = await runClient(["--release", "cookie-a"], env);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /no lease with cookie "cookie-a"/);
});

Deno.test("budget is never exceeded with 20 concurrent clients on budget 3", async () => {
  await using server = await ServerProc.start(["--resources", "r=3"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const results = await Promise.all(
    Array.from(
      { length: 20 },
      (_, i) =>
        runClient(["r", "1", "1", `c${i}`, "--wait", "120", "--quiet"], env),
    ),
  );
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  await waitFor(
    "every lease to expire",
    async () => (await server.resource("r")).allocated === 0,
    30_000,
  );
  const res = await server.resource("r");
  assert.equal(res.peak, 3, "the peak must reach but never pass the budget");
  assert.equal((await server.status()).stats.grants, 20);
  assert.equal(res.queuedRequests, 0);
});

Deno.test("grants follow FIFO order, and a big head is not overtaken", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "r=3",
    "--policy",
    "fifo",
  ]);
  await using builder = await BuilderProc.start(server);
  const first = await acquire(builder.socket, {
    resname: "r",
    amount: 3,
    lease: 60,
    cookie: "first",
  });
  const order: string[] = [];
  const leases = [];
  // Queue them one after another: big (3) at the head, then three of 1.
  for (
    const [cookie, amount] of [["big", 3], ["s1", 1], ["s2", 1], [
      "s3",
      1,
    ]] as const
  ) {
    const { promise: queued, resolve } = Promise.withResolvers<void>();
    leases.push(
      acquire(builder.socket, { resname: "r", amount, lease: 60, cookie }, {
        onQueued: () => resolve(),
      }).then((l) => {
        order.push(cookie);
        return l;
      }),
    );
    await queued;
  }
  const res = await server.resource("r");
  assert.deepEqual(res.queue.map((q) => [q.cookie, q.position]), [
    ["big", 1],
    ["s1", 2],
    ["s2", 3],
    ["s3", 4],
  ]);
  first.release();
  const big = await leases[0]!;
  assert.deepEqual(order, ["big"]);
  big.release();
  const rest = await Promise.all(leases.slice(1));
  assert.deepEqual(order, ["big", "s1", "s2", "s3"]);
  for (const l of rest) l.release();
  await waitFor(
    "all freed",
    async () => (await server.resource("r")).allocated === 0,
  );
});

Deno.test("sai-resource refuses what can never be granted, with exit 1 and the reason", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "r=2",
    "--max-lease",
    "100",
  ]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const cases: [string[], RegExp][] = [
    // The known names come from the server, through the builder.
    [["nosuch", "1", "10"], /"nosuch": no such resource \(known: "r"\)/],
    [["r", "3", "10"], /amount 3 exceeds the budget of 2/],
    [["r", "1", "101"], /lease 101 s exceeds the limit of 100 s/],
  ];
  for (const [args, reason] of cases) {
    const got = await runClient([...args, "--wait", "30"], env);
    assert.equal(got.code, 1, `${args}: ${got.stderr}`);
    assert.match(got.stderr, reason);
    assert.equal(got.stdout, "");
  }
  // A duplicate live cookie is refused; the original keeps its lease.
  assert.equal((await runClient(["r", "1", "60", "dup"], env)).code, 0);
  const dup = await runClient(["r", "1", "60", "dup"], env);
  assert.equal(dup.code, 1);
  assert.match(dup.stderr, /cookie "dup" is already in use/);
  const res = await server.resource("r");
  assert.equal(res.allocated, 1);
  assert.deepEqual(res.leases.map((l) => l.cookie), ["dup"]);
});

Deno.test("sai-resource times out waiting with exit 1 and withdraws its request", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "1", "60", "holder"], env)).code, 0);
  const got = await runClient(["r", "1", "60", "waiter", "--wait", "1"], env);
  assert.equal(got.code, 1);
  assert.match(got.stderr, /queued for r: position 1/);
  assert.match(got.stderr, /timed out waiting; the request was withdrawn/);
  await waitFor(
    "the queue to empty",
    async () => (await server.resource("r")).queuedRequests === 0,
  );
  // The holder reports, then exits: it may still be on its way out.
  await waitFor(
    "the waiter's holder to exit",
    async () => (await holderPids("waiter", builder)).length === 0,
  );
});

Deno.test("sai-resource exits 1 when the builder is unreachable", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const got = await runClient([
      "r",
      "1",
      "10",
      "--socket",
      `${dir}/none.sock`,
    ]);
    assert.equal(got.code, 1);
    assert.match(got.stderr, /Cannot reach the builder at ".*none\.sock"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sai-resource usage errors exit 2 with a usage line", async () => {
  const env = { SAI_BUILDER_RESOURCE_PROXY: "/nonexistent.sock" };
  const cases: [string[], RegExp][] = [
    [[], /expected NAME AMOUNT LEASE_SECONDS/],
    [["r", "1"], /got 2 argument/],
    [["r", "1", "10", "c", "extra"], /got 5 argument/],
    [["r", "0", "10"], /AMOUNT must be a positive integer, got "0"/],
    [["r", "-1", "10"], /AMOUNT must be a positive integer, got "-1"/],
    [["r", "1", "-10"], /LEASE_SECONDS must be a positive integer, got "-10"/],
    [["r", "1.5", "10"], /AMOUNT must be a positive integer, got "1.5"/],
    [["r", "1", "abc"], /LEASE_SECONDS must be a positive integer, got "abc"/],
    [["r", "1", "99999999999"], /LEASE_SECONDS must be a positive integer/],
    [["bad name", "1", "10"], /NAME must match/],
    [["r:1", "10"], /written NAME=AMOUNT, as in "r=1"/],
    [
      ["r", "1", "10", "--socket", "ws://127.0.0.1:4460"],
      /--socket must be the builder's Unix socket, a path or @NAME .*: a URL is what sai-builder --server takes/,
    ],
    [["r", "1", "10", 'bad"cookie'], /COOKIE must be/],
    [["r", "1", "10", "--wait", "soon"], /--wait must be a positive number/],
    [
      ["r", "1", "10", "--wait", "3000000"],
      /--wait must be at most 604800 seconds/,
    ],
    // Not node:util's advice to put it after "--", which would launch it.
    [["r", "1", "10", "--bogus"], /^sai-resource: unknown option "--bogus"$/m],
  ];
  for (const [args, reason] of cases) {
    const got = await runClient(args, env);
    assert.equal(got.code, 2, `${JSON.stringify(args)}: ${got.stderr}`);
    assert.match(got.stderr, reason, JSON.stringify(args));
    // One line saying what is wrong, one saying where help is: no usage.
    assert.equal(got.stderr.trimEnd().split("\n").length, 2, got.stderr);
    assert.match(got.stderr, /^Try "sai-resource --help" for the options\.$/m);
  }
  const noSocket = await runClient(["r", "1", "10"], {});
  assert.equal(noSocket.code, 2);
  assert.match(noSocket.stderr, /set SAI_BUILDER_RESOURCE_PROXY/);
});

Deno.test("kill -9 of a holder frees its lease promptly", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "2", "600", "victim"], env)).code, 0);
  const [pid] = await holderPids("victim", builder);
  assert.ok(pid, "a holder process holds the lease");
  Deno.kill(pid, "SIGKILL");
  // Far sooner than the 600 s lease: the closed socket is the signal.
  await waitFor(
    "the lease to be freed",
    async () => (await server.resource("r")).allocated === 0,
    5_000,
  );
  assert.equal((await server.status()).stats.releases, 1);
});

Deno.test("an expired lease is freed, the holder exits and the queue advances", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "1", "1", "short"], env)).code, 0);
  const next = await runClient(["r", "1", "60", "next", "--wait", "30"], env);
  assert.equal(next.code, 0, next.stderr);
  const doc = await server.status();
  assert.equal(doc.stats.expiries, 1);
  assert.deepEqual(doc.resources[0]!.leases.map((l) => l.cookie), ["next"]);
  await waitFor(
    "the expired holder to exit",
    async () => (await holderPids("short", builder)).length === 0,
  );
});

Deno.test("the server expires a short lease granted after a long one at its own end", async () => {
  // A raw builder never ends a lease itself: only the server's timer can,
  // a heartbeat and a second past its end (the raw builder's WebSocket
  // answers the server's pings, so it stays linked).
  await using server = await ServerProc.start([
    "--resources",
    "r=2",
    "--heartbeat",
    "1",
  ]);
  await using b = await RawBuilder.connect(server.url, {
    name: "raw",
    session: "a-session-of-some-length",
  });
  await b.next((m) => m.welcome !== undefined);
  b.send({ resname: "r", cookie: "long", amount: 1, lease: 600 });
  await b.next((m) => m.cookie === "long" && m.amount === 1);
  const t0 = Date.now();
  b.send({ resname: "r", cookie: "short", amount: 1, lease: 1 });
  await b.next((m) => m.cookie === "short" && m.amount === 1);
  await b.next((m) => m.cookie === "short" && m.expired === true, 8_000);
  const took = Date.now() - t0;
  assert.ok(took >= 2_900 && took < 6_000, `expired after ${took} ms`);
  const r = await server.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), ["long"]);
});

Deno.test("a client killed while queued leaves no trace", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "1", "60", "owner"], env)).code, 0);
  const waiting = new Proc(["client.ts", "r", "1", "60", "doomed"], { env });
  await waiting.stderr.wait(/queued for r: position 1/);
  assert.equal((await server.resource("r")).queuedRequests, 1);
  waiting.kill("SIGKILL");
  assert.equal((await waiting.finished()).code, 137);
  await waitFor(
    "the request to leave the queue",
    async () => (await server.resource("r")).queuedRequests === 0,
  );
  await waitFor(
    "its holder to exit",
    async () => (await holderPids("doomed", builder)).length === 0,
  );
  const res = await server.resource("r");
  assert.deepEqual(res.leases.map((l) => l.cookie), ["owner"]);
});

Deno.test("a killed builder's leases are freed by the server after the builder grace", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "r=3",
    "--heartbeat",
    "1",
    "--builder-grace",
    "1",
  ]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "2", "600", "orphan"], env)).code, 0);
  assert.equal((await server.resource("r")).allocated, 2);
  builder.kill("SIGKILL");
  await builder.finished();
  await server.stderr.wait(/builder leases kept for the builder grace/);
  await waitFor("the server to free the builder's lease", async () => {
    const doc = await server.status();
    return doc.builders.length === 0 && doc.resources[0]!.allocated === 0;
  });
  await server.stderr.wait(
    /builder gone: leases dropped after the builder grace .*leases=1/,
  );
  const { stats } = await server.status();
  assert.equal(stats.drops, 1);
  assert.equal(
    stats.grants + stats.restores - stats.releases - stats.expiries -
      stats.drops,
    0,
    "the counters account for every lease",
  );
  await waitFor(
    "the orphaned holder to exit",
    async () => (await holderPids("orphan", builder)).length === 0,
  );
});

Deno.test("a raw client speaking the C client's bytes gets a grant", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "warmcat_conns=32",
  ]);
  await using builder = await BuilderProc.start(server);
  await using c = await RawClient.connect(builder.socket);
  await c.send(cRequest("warmcat_conns", "c-client-1", 8, 20));
  const text = await c.until((t) => t.includes("}"));
  const reply = JSON.parse(text);
  assert.equal(reply.schema, "com-warmcat-sai-resource");
  assert.equal(reply.cookie, "c-client-1");
  assert.equal(reply.amount, 8);
  assert.equal((await server.resource("warmcat_conns")).allocated, 8);
  c.close();
  await waitFor(
    "the lease to be yielded on close",
    async () => (await server.resource("warmcat_conns")).allocated === 0,
  );
});

Deno.test("the builder reads a request split byte by byte, and answers a refusal without amount", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using builder = await BuilderProc.start(server);
  await using c = await RawClient.connect(builder.socket);
  for (const ch of cRequest("nosuch", "split-1", 1, 20)) await c.send(ch);
  const reply = JSON.parse(await c.closedByPeer());
  assert.equal(reply.cookie, "split-1");
  assert.equal(reply.amount, undefined, "real Sai: no amount means refused");
  assert.match(reply.error, /no such resource/);
});

Deno.test("bad input on the Unix socket gets an error and disturbs no other client", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using builder = await BuilderProc.start(server);
  await using good = await RawClient.connect(builder.socket);
  await good.send(cRequest("r", "good", 1, 60) + "\n");
  await good.until((t) => t.includes('"amount":1'));

  const bad: [string | Uint8Array, RegExp][] = [
    ["{not json}", /not valid JSON/],
    ["[1,2]", /expected a JSON object/],
    ['{"schema":"other","cookie":"x"}', /"schema" must be/],
    ['{"schema":"com-warmcat-sai-resource"}', /"cookie" must be/],
    [
      cRequest("r", "neg", -1, 10),
      /"amount" must be a positive integer, got -1/,
    ],
    [
      cRequest("r", "float", 1.5, 10),
      /"amount" must be a positive integer, got 1.5/,
    ],
    [cRequest("r", "zero", 1, 0), /"lease" must be a positive integer, got 0/],
    [cRequest("r", "huge", 1e12, 10), /"amount" must be a positive integer/],
    [cRequest("r\\u0001", "ctl", 1, 10), /"resname" must match/],
    ["{" + " ".repeat(17 * 1024), /longer than 16384 bytes/],
    [cRequest("r", "x".repeat(256), 1, 10), /"cookie" must be 1 to 255/],
  ];
  for (const [bytes, reason] of bad) {
    await using c = await RawClient.connect(builder.socket);
    await c.send(bytes);
    const text = await c.closedByPeer();
    const reply = JSON.parse(text);
    assert.equal(reply.amount, undefined);
    assert.match(reply.error, reason, String(bytes).slice(0, 60));
  }
  // The good client still holds its lease and nothing leaked.
  assert.equal(good.closed, false);
  let res = await server.resource("r");
  assert.equal(res.allocated, 1);
  assert.equal(res.queuedRequests, 0);
  assert.deepEqual(res.leases.map((l) => l.cookie), ["good"]);
  // And a request after all that, whole or in two reads, is served.
  for (const parts of [[cRequest("r", "after", 1, 60)], ["{", "}"]]) {
    await using c = await RawClient.connect(builder.socket);
    for (const part of parts) await c.send(part);
    if (parts.length === 1) {
      await c.until((t) => t.includes('"amount":1'));
      continue;
    }
    assert.match(JSON.parse(await c.closedByPeer()).error, /"schema" must be/);
  }
  res = await waitFor("the later lease to be released", async () => {
    const r = await server.resource("r");
    return r.allocated === 1 ? r : undefined;
  });
  assert.equal(res.queuedRequests, 0);
  assert.deepEqual(res.leases.map((l) => l.cookie), ["good"]);
});

Deno.test("two requests in one read are both handled in order", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using builder = await BuilderProc.start(server);
  await using c = await RawClient.connect(builder.socket);
  // A request then a yield of the same cookie, in one write: granted, then
  // released when the yield is read.
  await c.send(
    cRequest("r", "both", 1, 60) +
      '{"schema":"com-warmcat-sai-resource","cookie":"both"}',
  );
  await c.closedByPeer();
  await waitFor("the lease to be released", async () => {
    const doc = await server.status();
    return doc.resources[0]!.allocated === 0 &&
      doc.stats.grants + doc.stats.withdrawals === 1;
  });
});

Deno.test("a lease longer than setTimeout's limit is held, not ended at once", async () => {
  // 2³¹−1 ms is about 24.8 days: a longer timer fires after 1 ms instead.
  const lease = 30 * 86_400;
  await using server = await ServerProc.start([
    "--resources",
    "r=2",
    "--max-lease",
    "4294967295",
  ]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const cookie = uniq("long");
  const got = await runClient(["r", "1", String(lease), cookie], env);
  assert.equal(got.code, 0, got.stderr);
  // A whole round trip through builder and server after the grant: a timer
  // that overflowed to 1 ms has fired by then.
  const other = uniq("short");
  assert.equal((await runClient(["r", "1", "30", other], env)).code, 0);
  assert.equal((await runClient(["--release", other], env)).code, 0);
  await waitFor("the short lease to end", async () => {
    const r = await server.resource("r");
    return r.leases.length === 1 ? r : undefined;
  });
  const r = await server.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), [cookie]);
  const days = (r.leases[0]!.expires - Date.now()) / 86_400_000;
  assert.ok(days > 29.9 && days <= 30, `expires in ${days} days`);
  assert.equal((await holderPids(cookie, builder)).length, 1);
  assert.doesNotMatch(server.stderr.text, /TimeoutOverflow/);
  assert.doesNotMatch(builder.stderr.text, /TimeoutOverflow/);
  assert.equal((await runClient(["--release", cookie], env)).code, 0);
});

Deno.test("a request's unknown members go no further than the builder", async () => {
  // The builder forwarded a client's text as it was: an extra "hello" got
  // its link closed as a second hello (and its leases fenced), an extra
  // "ping" made the server answer a pong and the client wait in vain.
  await using server = await ServerProc.start(["--resources", "r=4"]);
  await using builder = await BuilderProc.start(server);
  for (
    const [cookie, extra] of [
      ["with-hello", `"hello":{"name":"evil","session":"0123456789abcdef0"}`],
      ["with-ping", `"ping":7`],
      ["with-restore-marker", `"restored":true`],
    ]
  ) {
    await using c = await RawClient.connect(builder.socket);
    await c.send(cRequest("r", cookie!, 1, 30).replace(/}$/, `,${extra}}`));
    const text = await c.until((t) => /"amount"/.test(t), 5000);
    assert.match(text, new RegExp(`"cookie":"${cookie}"`));
  }
  assert.equal((await server.status()).stats.grants, 3);
  assert.doesNotMatch(builder.stderr.text, /lost the server/);
  assert.doesNotMatch(server.stderr.text, /hello sent twice|builder refused/);
  assert.equal((await server.status()).builders.length, 1);
});

Deno.test("the server refuses a builder's message of two kinds and keeps the link", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using b = await RawBuilder.connect(server.url, {
    name: "b1",
    session: "a-session-long-enough-0123456789",
  });
  await b.next((m) => m.welcome !== undefined);
  b.send({
    resname: "r",
    cookie: "both",
    amount: 1,
    lease: 30,
    hello: { name: "b1" },
  });
  const refusal = await b.next((m) => m.cookie === "both");
  assert.match(String(refusal.error), /both "hello" and "cookie"/);
  b.send({ ping: 41 });
  await b.next((m) => m.pong === 41);
  assert.equal((await server.resource("r")).allocated, 0);
});

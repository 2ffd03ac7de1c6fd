import assert from "node:assert/strict";
import { Rig } from "./_rig_test.ts";

Deno.test("`BuilderCore` forwards a request once the link opens, after the hello", () => {
  const rig = new Rig();
  rig.start();
  assert.equal(rig.connects, 1);
  const a = rig.client({ cookie: "a" });
  assert.deepEqual(rig.takeServer(), [], "no link yet");
  rig.opened();
  const sent = rig.takeServer();
  assert.deepEqual(sent.map((m) => Object.keys(m)[1]), [
    "hello",
    "resname",
    "restored",
  ]);
  assert.deepEqual(sent[0]!.hello, { name: "b", session: "s".repeat(32) });
  // Only the members validated, and no restore mark: it was never sent.
  assert.deepEqual(sent[1], {
    schema: "com-warmcat-sai-resource",
    resname: "r",
    cookie: "a",
    amount: 1,
    lease: 30,
  });
  rig.welcome();
  assert.ok(rig.actions.some((x) => x.type === "connected"));
  const b = rig.client({ cookie: "b", hello: { name: "evil" } });
  assert.deepEqual(rig.takeServer().map((m) => m.cookie), ["b"]);
  assert.equal(rig.server.length, 0);
  assert.deepEqual(rig.to(a), []);
  assert.deepEqual(rig.to(b), []);
});

Deno.test("`BuilderCore` writes a grant to its client as the server sent it", () => {
  const rig = new Rig();
  rig.up();
  const id = rig.client({ cookie: "a" });
  rig.grant("a", { id: "g1" });
  const [sent] = rig.clients.get(id)!;
  assert.equal(sent!.msg.amount, 1);
  assert.equal(sent!.msg.id, "g1");
  assert.equal(sent!.seq, undefined, "no completion asked for a grant");
  const grant = rig.actions.findLast((x) => x.type === "clientSend");
  assert.ok(grant?.type === "clientSend");
  assert.match(
    grant.text,
    /^\{"schema":"com-warmcat-sai-resource","cookie":"a"/,
  );
});

Deno.test("`BuilderCore` ends a lease at its own end and gives it back only once the holder's write is done", () => {
  const rig = new Rig();
  rig.up();
  const id = rig.client({ cookie: "a", lease: 30 });
  rig.grant("a", { id: "g1" });
  rig.takeServer();
  rig.advance(29_999);
  assert.equal(rig.to(id).length, 1, "only the grant before its end");
  rig.advance(1);
  const expired = rig.clients.get(id)![1]!;
  assert.deepEqual(expired.msg, {
    schema: "com-warmcat-sai-resource",
    cookie: "a",
    expired: true,
  });
  assert.notEqual(expired.seq, undefined);
  assert.ok(!rig.closed.has(id), "kept open: the C client expects it");
  assert.deepEqual(
    rig.takeServer().filter((m) => "cookie" in m),
    [],
    "not given back before the holder was told",
  );
  rig.written(id);
  assert.deepEqual(rig.takeServer(), [{
    schema: "com-warmcat-sai-resource",
    cookie: "a",
    id: "g1",
  }]);
  // Its close later is about nothing the server holds.
  rig.clientClosed(id);
  assert.deepEqual(rig.takeServer(), []);
});

Deno.test("`BuilderCore` holds back the yield of a holder that never reads until its write completes, or it closes", () => {
  const rig = new Rig();
  rig.up({ id: "b1", fence: 20, heartbeat: 10 });
  const reads = rig.client({ cookie: "a", lease: 5 });
  const never = rig.client({ cookie: "b", lease: 5 });
  rig.grant("a", { id: "g1" });
  rig.grant("b", { id: "g2" });
  rig.advance(5_000);
  rig.written(reads);
  // Minutes pass, the link healthy: b's write never completes.
  rig.advance(600_000);
  assert.ok(rig.linked);
  assert.deepEqual(
    rig.actions.flatMap((x) =>
      x.type === "linkSend" && /"cookie".*"id"/.test(x.text) ? [x.text] : []
    ),
    ['{"schema":"com-warmcat-sai-resource","cookie":"a","id":"g1"}'],
  );
  rig.takeServer();
  // Its connection closes: it can hold nothing any more.
  rig.clientClosed(never);
  assert.deepEqual(rig.takeServer(), [{
    schema: "com-warmcat-sai-resource",
    cookie: "b",
    id: "g2",
  }]);
  // The write then fails: nothing twice.
  rig.written(never);
  assert.deepEqual(rig.takeServer(), []);
});

Deno.test("`BuilderCore` gives a lease back at once when its holder's connection closes", () => {
  const rig = new Rig({ logLevel: "info" });
  rig.up();
  const a = rig.client({ cookie: "a" });
  const b = rig.client({ cookie: "b" });
  rig.grant("a", { id: "g1" });
  rig.takeServer();
  rig.clientClosed(a);
  rig.clientClosed(b);
  assert.deepEqual(rig.takeServer(), [
    { schema: "com-warmcat-sai-resource", cookie: "a", id: "g1" },
    { schema: "com-warmcat-sai-resource", cookie: "b" },
  ]);
  assert.deepEqual(rig.logs().slice(-2), ["released", "withdrawn"]);
  // And its end later is no one's.
  rig.advance(60_000);
  assert.equal(rig.to(a).length, 1);
});

Deno.test("`BuilderCore` fences at the last round trip plus the fence, on a wake-up", () => {
  const rig = new Rig();
  rig.pongs = false;
  rig.start();
  rig.advance(100);
  const helloAt = rig.mono;
  rig.opened();
  rig.welcome({ id: "b1", fence: 2, heartbeat: 1 });
  const id = rig.client({ cookie: "a", lease: 60 });
  rig.grant("a", { id: "g1" });
  // Pings go out every half heartbeat; the server answers none.
  rig.advance(helloAt + 2_000 - rig.mono);
  assert.equal(rig.to(id).length, 1, "not fenced at the fence itself");
  assert.ok(rig.linked);
  rig.advance(1);
  assert.equal(rig.wakeAt > rig.mono, true);
  assert.deepEqual(rig.to(id)[1], {
    schema: "com-warmcat-sai-resource",
    cookie: "a",
    expired: true,
  });
  assert.ok(!rig.linked, "the link is closed");
  assert.ok(
    rig.logs().includes("fenced: no round trip with the server in time"),
  );
  assert.ok(rig.actions.some((x) => x.type === "linkClose"));
});

Deno.test("`BuilderCore` counts the fence from the last ping answered", () => {
  const rig = new Rig();
  rig.pongs = false;
  rig.up({ id: "b1", fence: 2, heartbeat: 1 });
  const id = rig.client({ cookie: "a", lease: 60 });
  rig.grant("a", { id: "g1" });
  rig.takeServer();
  rig.advance(500);
  const pingAt = rig.mono;
  const [ping] = rig.takeServer();
  assert.equal(typeof ping?.ping, "number");
  rig.advance(300);
  rig.fromServer({ pong: ping!.ping });
  rig.advance(pingAt + 2_000 - rig.mono);
  assert.equal(rig.to(id).length, 1);
  rig.advance(1);
  assert.equal(rig.to(id).length, 2, "fenced at the ping's send + fence");
});

Deno.test("`BuilderCore` fences first thing on any event after a freeze", () => {
  const rig = new Rig();
  rig.up({ id: "b1", fence: 2, heartbeat: 1 });
  const id = rig.client({ cookie: "a", lease: 60 });
  rig.grant("a", { id: "g1" });
  rig.takeServer();
  // Frozen: no wake-up came; the first thing after is a server message.
  rig.mono += 5_000;
  rig.wall += 5_000;
  rig.fromServer({ cookie: "x", amount: 1, resname: "r", lease: 1, id: "gx" });
  assert.equal(rig.to(id).length, 2);
  assert.deepEqual(rig.takeServer(), [], "the message was not acted on");
});

Deno.test("`BuilderCore` restores leases with their ids and time left, and requests in order, after a reconnect", () => {
  const rig = new Rig({ random: () => 0 });
  rig.up();
  const a = rig.client({ cookie: "a", lease: 30 });
  rig.grant("a", { id: "g1" });
  const b = rig.client({ cookie: "b", priority: 5 });
  rig.takeServer();
  rig.advance(5_500);
  rig.takeServer();
  rig.linkClosed();
  assert.ok(rig.logs().includes("lost the server"));
  // Backoff: 100 ms at the first attempt, jittered by random() down to half.
  assert.equal(rig.wakeAt, rig.mono + 50);
  rig.advance(50);
  assert.equal(rig.connects, 2);
  rig.opened();
  assert.deepEqual(rig.takeServer().slice(1), [
    {
      schema: "com-warmcat-sai-resource",
      resname: "r",
      cookie: "a",
      amount: 1,
      lease: 25,
      restore: "lease",
      id: "g1",
    },
    {
      schema: "com-warmcat-sai-resource",
      resname: "r",
      cookie: "b",
      amount: 1,
      lease: 30,
      priority: 5,
      restore: "queued",
    },
    { schema: "com-warmcat-sai-resource", restored: true },
  ]);
  // The restored grant is acknowledged again: the holder heard of it once.
  rig.grant("a", { id: "g1" });
  assert.equal(rig.to(a).length, 1);
  assert.deepEqual(rig.to(b), []);
});

Deno.test("`BuilderCore` reconnects with a jittered backoff that doubles up to its cap", () => {
  let r = 0.99;
  const rig = new Rig({ random: () => r, maxBackoffMs: 1_000 });
  rig.start();
  const delays: number[] = [];
  for (let i = 0; i < 6; i++) {
    rig.linkClosed(1006, "", "Connection refused");
    delays.push(rig.wakeAt - rig.mono);
    rig.advance(rig.wakeAt - rig.mono);
    r = r === 0.99 ? 0 : 0.99;
  }
  // From 100 ms doubling (to at most 1 s), from half of that to all of it.
  assert.deepEqual(delays, [99.5, 100, 398, 400, 995, 500]);
  assert.equal(rig.connects, 7);
});

Deno.test("`BuilderCore` gives up an attempt that does not open within the connect timeout", () => {
  const rig = new Rig({ connectTimeoutMs: 200 });
  rig.start();
  const id = rig.client({ cookie: "a", link: true });
  rig.advance(199);
  assert.ok(rig.linked);
  rig.advance(1);
  assert.ok(!rig.linked);
  const close = rig.actions.find((x) => x.type === "linkClose");
  assert.deepEqual(close, { type: "linkClose", code: 1000, reason: "" });
  const told = rig.to(id)[0]!.link as Record<string, unknown>;
  assert.equal(told.up, false);
  assert.equal(told.error, "no connection within 0.2 s");
  assert.ok(rig.wakeAt <= rig.mono + 100, "and tries again");
});

Deno.test("`BuilderCore` declares a silent link dead after the heartbeat", () => {
  const rig = new Rig({ heartbeatMs: 3_000 });
  rig.pongs = false;
  rig.up({ id: "b1", fence: 20, heartbeat: 10 });
  rig.advance(2_999);
  assert.ok(rig.linked);
  rig.advance(1_001);
  assert.ok(!rig.linked);
  assert.ok(rig.logs().includes("lost the server"));
});

Deno.test("`BuilderCore` tells waiting clients that asked the link is down once, and when it is back", () => {
  const rig = new Rig();
  rig.start();
  const asked = rig.client({ cookie: "a", link: true });
  const c = rig.client({ cookie: "c" });
  // The first attempt is under way: nothing to say yet.
  assert.deepEqual(rig.to(asked), []);
  for (let i = 0; i < 4; i++) {
    rig.linkClosed(1006, "", "Connection refused (os error 111)");
    rig.advance(rig.wakeAt - rig.mono);
  }
  const down = rig.to(asked);
  assert.equal(down.length, 1, "told once, not at every retry");
  const link = down[0]!.link as Record<string, unknown>;
  assert.equal(link.up, false);
  assert.equal(link.server, "ws://127.0.0.1:4460");
  assert.equal(link.since, rig.wall - rig.mono + 1_000, "since start, wall");
  assert.equal(rig.core.linkStatus.error, "Connection refused (os error 111)");
  // A newcomer that asks hears at once.
  const late = rig.client({ cookie: "l", link: true });
  assert.equal(rig.to(late).length, 1);
  rig.opened();
  rig.welcome();
  assert.deepEqual(rig.to(asked)[1]!.link, {
    up: true,
    server: "ws://127.0.0.1:4460",
    since: rig.wall,
  });
  assert.deepEqual(rig.to(c), [], "the C client never hears of links");
});

Deno.test("`BuilderCore` stops and says so when another live builder has its name", () => {
  const rig = new Rig();
  rig.start();
  rig.opened();
  rig.linkClosed(1008, "name in use by a live builder at 10.0.0.7:5555", "");
  const refused = rig.actions.find((x) => x.type === "refused");
  assert.deepEqual(refused, {
    type: "refused",
    other: "10.0.0.7:5555",
    message:
      'Cannot join the server at "ws://127.0.0.1:4460": the name "b" is in use by a live builder at 10.0.0.7:5555; give this builder another --name',
  });
  rig.advance(600_000);
  assert.equal(rig.connects, 1, "no retry");
  // Clients are still answered, link down.
  const id = rig.other({ check: true });
  assert.equal((rig.to(id)[0]!.link as Record<string, unknown>).up, false);
});

Deno.test("`BuilderCore` refuses a connection that sends no request in time", () => {
  const rig = new Rig({ requestTimeoutMs: 500 });
  rig.up();
  const slow = rig.silentClient();
  rig.advance(200);
  const later = rig.silentClient();
  rig.advance(299);
  assert.ok(!rig.closed.has(slow));
  rig.advance(1);
  assert.deepEqual(rig.to(slow), [{
    schema: "com-warmcat-sai-resource",
    cookie: "",
    error: "No request within the time limit",
  }]);
  assert.ok(rig.closed.has(slow));
  rig.request(later, { cookie: "l" });
  rig.advance(10_000);
  assert.ok(!rig.closed.has(later), "its request came in time");
});

Deno.test("`BuilderCore` answers --check, and refuses a check after a request", () => {
  const rig = new Rig();
  rig.up();
  const id = rig.other({ check: true });
  assert.deepEqual(rig.to(id), [{
    schema: "com-warmcat-sai-resource",
    builder: "b",
    link: { up: true, server: "ws://127.0.0.1:4460", since: rig.wall },
  }]);
  assert.ok(rig.closed.has(id));
  const r = rig.client({ cookie: "a" });
  rig.takeServer();
  rig.send(r, { check: true });
  assert.match(String(rig.to(r)[0]!.error), /a check is alone/);
  assert.ok(rig.closed.has(r));
  assert.deepEqual(rig.takeServer(), [{
    schema: "com-warmcat-sai-resource",
    cookie: "a",
  }], "its request is withdrawn");
});

Deno.test("`BuilderCore` releases by cookie from another connection, and says when a lease had expired", () => {
  const rig = new Rig();
  rig.up();
  const holder = rig.client({ cookie: "a", lease: 10 });
  rig.grant("a", { id: "g1" });
  rig.takeServer();
  const release = rig.other({ cookie: "a" });
  assert.deepEqual(rig.to(release), [{
    schema: "com-warmcat-sai-resource",
    cookie: "a",
    released: true,
  }]);
  assert.ok(rig.closed.has(holder) && rig.closed.has(release));
  assert.deepEqual(rig.takeServer(), [{
    schema: "com-warmcat-sai-resource",
    cookie: "a",
    id: "g1",
  }]);
  const other = rig.client({ cookie: "e", lease: 10 });
  rig.grant("e", { id: "g2" });
  rig.advance(10_000);
  const endedAt = rig.wall;
  rig.written(other);
  rig.wall += 3_600_000; // a wall-clock step: shown as of now
  rig.advance(5_000);
  const late = rig.other({ cookie: "e" });
  assert.deepEqual(rig.to(late), [{
    schema: "com-warmcat-sai-resource",
    cookie: "e",
    released: true,
    expiredAt: Math.round(endedAt + 3_600_000),
  }]);
  const none = rig.other({ cookie: "e" });
  assert.match(String(rig.to(none)[0]!.error), /no lease with cookie "e"/);
});

Deno.test("`BuilderCore` refuses release by cookie on an abstract socket", () => {
  const rig = new Rig({ abstractSocket: true, socket: "@sai" });
  rig.up();
  assert.ok(rig.logs().some((l) => l.startsWith("abstract socket")));
  rig.client({ cookie: "a" });
  rig.grant("a", { id: "g1" });
  rig.takeServer();
  const release = rig.other({ cookie: "a" });
  assert.match(
    String(rig.to(release)[0]!.error),
    /^Cannot release "a" by cookie on the abstract socket "@sai"/,
  );
  assert.deepEqual(rig.takeServer(), [], "the lease is kept");
});

Deno.test("`BuilderCore` gives back a grant whose client left, and ignores news of an ended grant", () => {
  const rig = new Rig();
  rig.up();
  const id = rig.client({ cookie: "a" });
  rig.clientClosed(id);
  rig.takeServer();
  rig.grant("a", { id: "g1" });
  assert.deepEqual(rig.takeServer(), [{
    schema: "com-warmcat-sai-resource",
    cookie: "a",
    id: "g1",
  }]);
  const again = rig.client({ cookie: "a" });
  rig.grant("a", { id: "g2" });
  rig.fromServer({ cookie: "a", expired: true, id: "g1" });
  assert.equal(rig.to(again).length, 1, "the expiry of g1 is not g2's");
  rig.fromServer({ cookie: "a", expired: true, id: "g2" });
  assert.equal(rig.to(again)[1]!.expired, true);
});

Deno.test("`BuilderCore` passes a refusal on and closes, and queue progress only to who asked", () => {
  const rig = new Rig();
  rig.up();
  const quiet = rig.client({ cookie: "q" });
  const asks = rig.client({ cookie: "p", progress: true });
  for (const cookie of ["q", "p"]) {
    rig.fromServer({ cookie, queued: { position: 1, eta: 2 } });
  }
  assert.deepEqual(rig.to(quiet), []);
  assert.equal(rig.to(asks).length, 1);
  rig.fromServer({ cookie: "q", error: "no such resource" });
  assert.deepEqual(rig.to(quiet), [{
    schema: "com-warmcat-sai-resource",
    cookie: "q",
    error: "no such resource",
  }]);
  assert.ok(rig.closed.has(quiet));
});

Deno.test("`BuilderCore` refuses bad input, a second request and a cookie in use", () => {
  const rig = new Rig();
  rig.up();
  const bad = rig.silentClient();
  rig.run(rig.core.clientBadInput(rig.tick, bad, "Cannot parse message: x"));
  assert.equal(rig.to(bad)[0]!.error, "Cannot parse message: x");
  assert.ok(rig.closed.has(bad));
  const a = rig.client({ cookie: "a" });
  const dup = rig.client({ cookie: "a" });
  assert.match(String(rig.to(dup)[0]!.error), /already in use/);
  rig.request(a, { cookie: "b" });
  assert.match(String(rig.to(a)[0]!.error), /only one request/);
  // What the core closed, it no longer hears of.
  rig.takeServer();
  rig.clientClosed(a);
  rig.request(a, { cookie: "a" });
  assert.deepEqual(rig.takeServer(), []);
});

Deno.test("`BuilderCore` asks to be woken only for an earlier deadline", () => {
  const rig = new Rig({ heartbeatMs: 9_000 });
  rig.up({ id: "b1", fence: 20, heartbeat: 10 });
  const wakes = () => rig.actions.filter((x) => x.type === "wake").length;
  const before = wakes();
  // Grants and new connections under load: their deadlines are later
  // than the next heartbeat, so no timer is re-armed for them.
  for (let i = 0; i < 100; i++) {
    const id = rig.client({ cookie: `c${i}` });
    rig.grant(`c${i}`, { id: `g${i}` });
    rig.clientClosed(id);
  }
  assert.equal(wakes(), before);
  // A lease shorter than that is.
  rig.client({ cookie: "short", lease: 1 });
  rig.grant("short", { lease: 1 });
  assert.equal(wakes(), before + 1);
  assert.equal(rig.wakeAt, rig.mono + 1_000);
});

Deno.test("`BuilderCore` does nothing after shutdown but close its link", () => {
  const rig = new Rig();
  rig.up();
  rig.client({ cookie: "a" });
  rig.takeServer();
  rig.run(rig.core.shutdown(rig.tick));
  assert.deepEqual(rig.actions.at(-1), {
    type: "linkClose",
    code: 1000,
    reason: "builder shutting down",
  });
  const n = rig.actions.length;
  rig.clientClosed(1);
  rig.run(rig.core.wake(rig.tick));
  assert.equal(rig.actions.length, n);
});

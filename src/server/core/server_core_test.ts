import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { LogAction, Mutant } from "../../shared/core_io.ts";
import type { ConnId, ServerAction } from "./actions.ts";
import { ServerCore, type ServerCoreOptions } from "./server_core.ts";
import {
  formatState,
  parseState,
  type ServerState,
  type StoredState,
} from "./state.ts";

const SCHEMA = "com-warmcat-sai-resource";
const WALL = 1_700_000_000_000;
const SESSION_A = "session-a-0123456789abcdef";
const SESSION_B = "session-b-0123456789abcdef";

const sha256 = (text: string) =>
  createHash("sha256").update(text).digest("hex");

/**
 * A core on a fake clock: every action is recorded, wake-ups are kept and
 * delivered by {@linkcode advance}, and state writes wait for the test.
 */
function harness(
  options: Partial<ServerCoreOptions> = {},
  stored: StoredState = { kind: "none" },
) {
  let mono = 1_000;
  let wakeAt: number | undefined;
  const core = new ServerCore({
    budgets: new Map([["r", 2]]),
    hash: sha256,
    heartbeat: 10,
    logLevel: "debug",
    ...options,
  });
  const actions: ServerAction[] = [];
  const writes: { seq: number; state: ServerState }[] = [];
  const tick = () => ({ mono, wall: WALL + mono });
  const run = (list: ServerAction[]) => {
    for (const a of list) {
      actions.push(a);
      if (a.type === "wake") wakeAt = a.at;
      if (a.type === "write") writes.push({ seq: a.seq, state: a.state });
    }
    return list;
  };
  run(core.start(stored, tick()));
  // The first write (the file marked dirty) succeeds, as the shell awaits.
  for (const w of writes.splice(0)) {
    run(core.written(w.seq, true, undefined, tick()));
  }
  const t = {
    core,
    actions,
    writes,
    tick,
    run,
    get now() {
      return mono;
    },
    get wakeAt() {
      return wakeAt;
    },
    /** Moves the clock to `to`, waking the core whenever it asked. */
    advanceTo(to: number) {
      let wakes = 0;
      while (wakeAt !== undefined && wakeAt <= to) {
        // A deadline the core cannot get past would spin a real shell.
        assert.ok(++wakes < 10_000, `woken again and again at ${wakeAt}`);
        mono = Math.max(mono, wakeAt);
        wakeAt = undefined;
        run(core.wake(tick()));
      }
      mono = to;
    },
    advance(ms: number) {
      t.advanceTo(mono + ms);
    },
    open(conn: ConnId, peer = "10.0.0.1:5000") {
      return run(core.open(conn, peer, tick()));
    },
    send(conn: ConnId, msg: Record<string, unknown>) {
      return run(
        core.message(conn, JSON.stringify({ schema: SCHEMA, ...msg }), tick()),
      );
    },
    closed(conn: ConnId) {
      return run(core.closed(conn, tick()));
    },
    /** A builder says hello on `conn` (opened first). */
    hello(conn: ConnId, name: string, session?: string) {
      t.open(conn);
      return t.send(conn, {
        hello: { name, ...(session !== undefined && { session }) },
      });
    },
    /** What was sent to `conn`, parsed, since the last call. */
    received(conn: ConnId): Record<string, unknown>[] {
      const out: Record<string, unknown>[] = [];
      for (let i = 0; i < actions.length; i++) {
        const a = actions[i]!;
        if (a.type !== "send" || a.conn !== conn) continue;
        out.push(JSON.parse(a.text));
        actions.splice(i--, 1);
      }
      return out;
    },
    closes(conn: ConnId) {
      return actions.filter((a) => a.type === "close" && a.conn === conn);
    },
    logged(msg: string): LogAction[] {
      return actions.filter((a): a is LogAction =>
        a.type === "log" && a.msg === msg
      );
    },
    allocated(resname = "r") {
      return core.status(tick()).resources.find((r) => r.name === resname)!
        .allocated;
    },
  };
  return t;
}

const request = (cookie: string, amount = 1, lease = 30) => ({
  cookie,
  resname: "r",
  amount,
  lease,
});

Deno.test("ServerCore: a hello is welcomed with the fence and heartbeat; the first message must be a hello", () => {
  const t = harness();
  t.hello("c1", "alpha", SESSION_A);
  assert.deepEqual(t.received("c1"), [{
    schema: SCHEMA,
    welcome: { id: "b1", fence: 20, heartbeat: 10 },
  }]);
  t.open("c2");
  t.send("c2", { ping: 1 });
  assert.equal(t.closes("c2").length, 1);
  assert.deepEqual(t.closes("c2")[0], {
    type: "close",
    conn: "c2",
    code: 1008,
    reason: "the first message must be a hello",
  });
  t.send("c2", { hello: { name: "late" } });
  assert.deepEqual(t.received("c2"), [], "nothing acted on once closed");
});

Deno.test("ServerCore: a grant shows its end as wall-clock time, and the lease expires at its deadline through wake", () => {
  const t = harness({ heartbeat: 10 });
  t.hello("c1", "alpha", SESSION_A);
  t.received("c1");
  t.send("c1", request("k", 1, 30));
  const [grant] = t.received("c1");
  assert.equal(grant!.cookie, "k");
  assert.equal(grant!.lease, 30);
  assert.equal(grant!.expires, WALL + t.now + 30_000);
  // Expired a heartbeat and a second (the margin) after its end, by the
  // server's clock, if the builder did not yield it (ours does): a
  // builder frozen across the end is noticed silent before that.
  const end = t.now + 30_000 + 10_000 + 1_000;
  keepAlive(t, end - 1);
  assert.equal(t.wakeAt! <= end, true, "a wake-up no later than the end");
  assert.equal(t.allocated(), 1);
  t.advanceTo(end);
  assert.deepEqual(t.received("c1").filter((m) => m.expired), [{
    schema: SCHEMA,
    cookie: "k",
    expired: true,
    id: grant!.id,
  }]);
  assert.equal(t.allocated(), 0);
  assert.equal(t.core.status(t.tick()).stats.expiries, 1);
});

Deno.test("ServerCore pings a link silent half a heartbeat and drops one silent a whole heartbeat", () => {
  const t = harness();
  t.hello("c1", "alpha", SESSION_A);
  t.send("c1", request("k"));
  const heard = t.now;
  t.advanceTo(heard + 4_999);
  assert.deepEqual(t.actions.filter((a) => a.type === "ping"), []);
  t.advanceTo(heard + 5_000);
  assert.deepEqual(t.actions.filter((a) => a.type === "ping"), [
    { type: "ping", conn: "c1" },
  ]);
  // The pong: alive, and checked again from then.
  t.run(t.core.heard("c1", t.tick()));
  t.advanceTo(heard + 14_999);
  assert.deepEqual(t.closes("c1"), [], "heard at 5 s: alive until 15 s");
  t.advanceTo(heard + 15_000);
  assert.deepEqual(t.closes("c1"), [{
    type: "close",
    conn: "c1",
    code: 1006,
    reason: "silent past the heartbeat",
  }]);
  // The shell drops it and says so: the builder grace begins.
  t.closed("c1");
  assert.equal(t.logged("builder leases kept for the builder grace").length, 1);
  assert.equal(t.allocated(), 1);
});

Deno.test("ServerCore drops a lost builder's leases at last heard + builder grace + heartbeat, unless it resumes", () => {
  const t = harness({ heartbeat: 1, builderGrace: 4 });
  t.hello("c1", "alpha", SESSION_A);
  t.send("c1", request("k"));
  const lastHeard = t.now;
  t.advance(200);
  t.closed("c1");
  t.advanceTo(lastHeard + 4_999);
  assert.equal(t.allocated(), 1, "kept for the builder grace");
  t.advanceTo(lastHeard + 5_000);
  assert.equal(t.allocated(), 0);
  assert.equal(t.core.status(t.tick()).stats.drops, 1);

  // The same session back within the grace keeps everything.
  t.hello("c2", "alpha", SESSION_A);
  t.send("c2", request("k2"));
  t.closed("c2");
  t.advance(2_000);
  t.hello("c3", "alpha", SESSION_A);
  assert.equal(t.received("c3")[0]!.welcome !== undefined, true);
  t.send("c3", { restore: "lease", ...request("k2", 1, 25) });
  t.send("c3", { restored: true });
  t.advance(10_000);
  assert.equal(t.allocated(), 1, "resumed: not dropped");
});

Deno.test("ServerCore refuses a connection that says no hello in time", () => {
  const t = harness({ helloTimeoutMs: 5_000 });
  t.open("c1");
  t.advance(4_999);
  assert.deepEqual(t.closes("c1"), []);
  t.advance(1);
  assert.deepEqual(t.closes("c1").map((a) => a.type === "close" && a.reason), [
    "no hello in time",
  ]);
});

Deno.test("ServerCore after a crash grants nothing new until the recorded builder has restored", () => {
  const digest = sha256(SESSION_A);
  const crashed: StoredState = {
    kind: "state",
    state: {
      version: 2,
      clean: false,
      fence: 20,
      builders: [digest],
      overrides: {},
    },
  };
  const t = harness({ stateFile: "/state.json", reclaimGrace: 40 }, crashed);
  assert.equal(
    t.logged("reclaim grace: the last run did not end cleanly").length,
    1,
  );
  assert.equal(
    t.core.status(t.tick()).reclaimUntil,
    WALL + t.now + 40_000,
    "shown as wall-clock time",
  );
  // Another builder's request queues.
  t.hello("c2", "beta", SESSION_B);
  t.writes.splice(0).forEach((w) =>
    t.run(t.core.written(w.seq, true, undefined, t.tick()))
  );
  t.received("c2");
  t.send("c2", request("new"));
  assert.deepEqual(t.received("c2"), [], "queued, not granted");
  // The recorded builder restores its lease: admitted; then the grace ends.
  t.hello("c1", "alpha", SESSION_A);
  t.received("c1");
  t.send("c1", { restore: "lease", ...request("old", 1, 20) });
  assert.equal(t.received("c1")[0]!.cookie, "old");
  assert.deepEqual(t.received("c2"), []);
  t.send("c1", { restored: true });
  assert.equal(t.logged("reclaim grace ended").length, 1);
  assert.equal(t.received("c2")[0]!.cookie, "new", "granted at the end");
  assert.equal(t.allocated(), 2);
});

Deno.test("ServerCore ends the reclaim grace by time when a recorded builder never comes back", () => {
  const stored: StoredState = { kind: "unknown", reason: "it is not JSON" };
  const t = harness({
    stateFile: "/state.json",
    reclaimGrace: 40,
    builderGrace: 40,
    heartbeat: 3600,
  }, stored);
  t.hello("c2", "beta", SESSION_B);
  t.writes.splice(0).forEach((w) =>
    t.run(t.core.written(w.seq, true, undefined, t.tick()))
  );
  t.send("c2", request("new"));
  t.advance(39_999);
  assert.equal(t.allocated(), 0);
  t.advance(1);
  assert.equal(t.allocated(), 0, "c2 is halfway through its restore");
  t.send("c2", { restored: true });
  assert.equal(t.allocated(), 1, "its restore done, and the time up");
  assert.equal(t.logged("reclaim grace ended")[0]?.fields.reason, "time");
});

Deno.test("ServerCore: a failed state file write delays the welcome, is retried a second later, and what came meanwhile follows the welcome", () => {
  const t = harness({ stateFile: "/state.json" });
  t.hello("c1", "alpha", SESSION_A);
  t.send("c1", request("k"));
  assert.deepEqual(t.received("c1"), [], "not welcomed before it is on disk");
  const [w1] = t.writes.splice(0);
  assert.deepEqual(w1!.state.builders, [sha256(SESSION_A)]);
  t.run(t.core.written(w1!.seq, false, "No space left on device", t.tick()));
  assert.equal(t.logged("cannot write the state file").length, 1);
  t.advance(999);
  assert.equal(t.writes.length, 0);
  t.advance(1);
  assert.equal(t.writes.length, 1, "retried");
  const [w2] = t.writes.splice(0);
  t.run(t.core.written(w2!.seq, true, undefined, t.tick()));
  const got = t.received("c1");
  assert.equal(got[0]!.welcome !== undefined, true);
  assert.equal(got[1]!.cookie, "k", "then its request, in order");
});

Deno.test("ServerCore: a hello waiting for the state file holds its name; one closed meanwhile is never welcomed", () => {
  const t = harness({ stateFile: "/state.json" });
  t.hello("c1", "alpha", SESSION_A);
  t.hello("c2", "alpha", SESSION_B);
  assert.equal(
    t.closes("c2").map((a) => a.type === "close" && a.reason)[0],
    "name in use by a live builder at 10.0.0.1:5000",
  );
  t.closed("c1");
  const [w] = t.writes.splice(0);
  t.run(t.core.written(w!.seq, true, undefined, t.tick()));
  assert.deepEqual(t.received("c1"), []);
  assert.deepEqual(t.core.status(t.tick()).builders, []);
});

Deno.test("ServerCore: admin calls return a ticket that a persisted action settles once on disk", () => {
  const t = harness({ stateFile: "/state.json" });
  const call = t.core.setBudget("r", 5, { addr: "test" }, t.tick());
  assert.deepEqual(call.result.budget, 5);
  assert.equal(call.persist, 1);
  t.run(call.actions);
  const [w] = t.writes.splice(0);
  assert.deepEqual(w!.state.overrides, { r: 5 });
  const after = t.run(t.core.written(w!.seq, true, undefined, t.tick()));
  assert.deepEqual(after.filter((a) => a.type === "persisted"), [
    { type: "persisted", upTo: 1, ok: true },
  ]);
  const none = harness().core.setBudget("r", 1, { addr: "test" }, t.tick());
  assert.equal(none.persist, false, "no state file");
});

Deno.test("ServerCore.shutdown() writes a clean state only with nothing held, closes builders and acts on nothing more", () => {
  const t = harness({ stateFile: "/state.json" });
  t.hello("c1", "alpha", SESSION_A);
  t.writes.splice(0).forEach((w) =>
    t.run(t.core.written(w.seq, true, undefined, t.tick()))
  );
  t.send("c1", request("k"));
  t.run(t.core.shutdown(t.tick()));
  const [last] = t.writes.splice(0);
  assert.equal(last!.state.clean, false, "a lease is held");
  assert.deepEqual(last!.state.builders, [sha256(SESSION_A)]);
  assert.equal(t.closes("c1").length, 1);
  t.received("c1");
  t.send("c1", request("after"));
  assert.deepEqual(t.received("c1"), []);
});

/** Advances to `to`, the builder on "c1" pinging every 4 s meanwhile. */
function keepAlive(t: ReturnType<typeof harness>, to: number): void {
  let n = 100;
  while (t.now + 4_000 < to) {
    t.advance(4_000);
    t.send("c1", { ping: n++ });
  }
  t.advanceTo(to);
}

/** A builder whose lease `k` expired and whose cookie was granted again. */
function staleYield(mutant?: Mutant) {
  const t = harness(mutant ? { mutant } : {});
  t.hello("c1", "alpha", SESSION_A);
  t.send("c1", request("k", 1, 5));
  const first = t.received("c1").find((m) => m.cookie === "k")!;
  keepAlive(t, t.now + 5_000 + 11_000);
  t.send("c1", request("k", 1, 30));
  t.received("c1");
  assert.equal(t.allocated(), 1);
  // The yield of the first grant arrives late.
  t.send("c1", { cookie: "k", yield: true, id: first.id });
  return t;
}

Deno.test("ServerCore ignores a late yield of an ended grant; the stale-yield mutant does not", () => {
  assert.equal(staleYield().allocated(), 1, "the live lease is untouched");
  assert.equal(staleYield("stale-yield").allocated(), 0, "the mutant frees it");
});

Deno.test("ServerCore with the no-reclaim-grace mutant grants at once after a crash", () => {
  const stored: StoredState = { kind: "unknown", reason: "it is empty" };
  const honest = harness({ stateFile: "/s" }, stored);
  const mutant = harness(
    { stateFile: "/s", mutant: "no-reclaim-grace" },
    stored,
  );
  for (const t of [honest, mutant]) {
    t.hello("c1", "alpha", SESSION_A);
    t.writes.splice(0).forEach((w) =>
      t.run(t.core.written(w.seq, true, undefined, t.tick()))
    );
    t.send("c1", request("k"));
  }
  assert.equal(honest.allocated(), 0);
  assert.equal(mutant.allocated(), 1);
});

Deno.test("ServerCore with the restore-unbounded mutant admits a restore past the budget", () => {
  for (
    const [mutant, allocated] of [[undefined, 2], [
      "restore-unbounded",
      3,
    ]] as const
  ) {
    const t = harness(mutant ? { mutant } : {});
    t.hello("c1", "alpha", SESSION_A);
    t.send("c1", request("a", 2));
    t.hello("c2", "beta", SESSION_B);
    t.send("c2", { restore: "lease", ...request("b", 1, 20) });
    assert.equal(t.allocated(), allocated, String(mutant));
  }
});

Deno.test("ServerCore asks for one wake-up at its earliest deadline, and not again for a later one", () => {
  const t = harness();
  t.hello("c1", "alpha", SESSION_A);
  const wakes = () => t.actions.filter((a) => a.type === "wake").length;
  const before = wakes();
  // Each grant ends later than the link's next check: no new wake-up.
  for (let i = 0; i < 2; i++) t.send("c1", request(`k${i}`));
  t.send("c1", { cookie: "k0", yield: true });
  assert.equal(wakes(), before);
});

Deno.test("ServerCore after a crash, on what its last run wrote: the state file round trip a simulator's disk makes", () => {
  const first = harness({ stateFile: "/state.json" });
  first.hello("c1", "alpha", SESSION_A);
  const [w] = first.writes.splice(0);
  first.run(first.core.written(w!.seq, true, undefined, first.tick()));
  first.send("c1", request("k"));
  // A crash: the next run reads the bytes the last write left.
  const disk = new TextEncoder().encode(formatState(w!.state));
  const next = harness({ stateFile: "/state.json" }, parseState(disk));
  assert.equal(next.core.status(next.tick()).reclaimUntil !== null, true);
  next.hello("c9", "beta", SESSION_B);
  next.writes.splice(0).forEach((x) =>
    next.run(next.core.written(x.seq, true, undefined, next.tick()))
  );
  next.send("c9", request("new"));
  assert.equal(next.allocated(), 0, "alpha may still hold its lease");
});

Deno.test("ServerCore keeps a lost builder's lease past its end until the grace: it may be frozen", () => {
  // Found by the simulator (seed 12): a builder frozen across its lease's
  // end could not tell its holder, and the server expired the lease (and
  // granted it again) a second after the end.
  const t = harness({ heartbeat: 1, builderGrace: 4 });
  t.hello("c1", "alpha", SESSION_A);
  t.send("c1", request("k", 1, 2));
  const heard = t.now;
  // Silent from now on: dropped after a heartbeat, its lease kept.
  t.advanceTo(heard + 1_500);
  assert.equal(t.closes("c1").length, 1);
  t.closed("c1");
  // Past the lease's end and its margin: still counted.
  t.advanceTo(heard + 2_000 + 2_000 + 100);
  assert.equal(t.allocated(), 1, "not expired while its builder is away");
  // Dropped at last heard + grace + heartbeat.
  t.advanceTo(heard + 5_000);
  assert.equal(t.allocated(), 0);
  assert.equal(t.core.status(t.tick()).stats.drops, 1);
});

Deno.test("ServerCore drops a lease its builder re-sends as waiting after a reconnect, and queues the request anew", () => {
  // Found by the simulator (seeds 53, 561, 2028, 136): a grant lost with a
  // dropped link was re-sent, on the builder's restore of the request, as
  // the old grant with its time rounded up (or with another amount).
  const t = harness({ heartbeat: 3600 });
  t.hello("c1", "alpha", SESSION_A);
  t.send("c1", request("k", 1, 5));
  const lost = t.received("c1").find((m) => m.cookie === "k")!;
  assert.equal(lost.amount, 1);
  // The link drops with the grant: the builder never saw it.  Back on a
  // new connection it re-sends the request, now for 2.
  t.closed("c1");
  t.hello("c2", "alpha", SESSION_A);
  t.send("c2", { ...request("k", 2, 30), restore: "queued" });
  const [again] = t.received("c2").filter((m) => m.cookie === "k");
  assert.equal(again!.amount, 2, "the re-sent request, not the old grant");
  assert.equal(again!.lease, 30);
  assert.notEqual(again!.id, lost.id);
  const s = t.core.status(t.tick());
  assert.equal(s.stats.drops, 1);
  assert.equal(s.resources[0]!.allocated, 2);
  assert.equal(s.stats.grants + s.stats.restores - s.stats.drops, 1);
});

Deno.test("ServerCore lets a request re-sent as waiting cross its grant on the same connection", () => {
  // Found by the simulator (seed 223): after a server freeze, a grant sent
  // on the builder's new connection crossed the builder's re-sent request.
  const t = harness({ heartbeat: 3600 });
  t.hello("c1", "alpha", SESSION_A);
  t.send("c1", request("k", 1, 30));
  const grant = t.received("c1").find((m) => m.cookie === "k")!;
  t.send("c1", { ...request("k", 1, 30), restore: "queued" });
  assert.deepEqual(
    t.received("c1"),
    [],
    "nothing more: the grant is on its way",
  );
  t.send("c1", { restored: true });
  assert.equal(t.allocated(), 1);
  assert.equal(t.core.status(t.tick()).resources[0]!.leases[0]!.id, grant.id);
});

import assert from "node:assert/strict";
import { Allocator } from "../../allocator/allocator.ts";
import { Logger } from "../../shared/log.ts";
import { OperatorActions } from "./operator.ts";
import { QueueProgress } from "./progress.ts";
import type { OperatorSession } from "./operator.ts";
import type { ServerStats } from "./stats.ts";

function session(
  owner: string,
  publicId: string,
  name: string,
): OperatorSession {
  return { owner, publicId, name };
}

Deno.test("OperatorActions.forceRelease() refuses a builder that matches one builder's id and another's name", () => {
  const allocator = new Allocator([["r", 2]], { now: () => 0 });
  allocator.request("s1", { cookie: "c", resname: "r", amount: 1, lease: 9 });
  allocator.request("s2", { cookie: "c", resname: "r", amount: 1, lease: 9 });
  const sessions = [session("s1", "b3", "alpha"), session("s2", "b7", "b3")];
  const stats = {
    releases: 0,
    forcedReleases: 0,
  } as ServerStats;
  const ops = new OperatorActions({
    allocator,
    log: new Logger("error"),
    stats,
    sessions: () => sessions,
    send: () => {},
    apply: () => {},
    progress: new QueueProgress({
      allocator,
      send: () => {},
      intervalMs: 1,
    }),
    config: new Map([["r", 2]]),
    persist: () => {},
  });
  const by = { addr: "test" };
  assert.deepEqual(ops.forceRelease("b3", "c", by), {
    result: "ambiguous-builder",
    ids: ["b3", "b7"],
  });
  assert.equal(allocator.status()[0]!.allocated, 2, "nothing released");
  assert.equal(ops.forceRelease("b7", "c", by).result, "released");
  assert.equal(ops.forceRelease("alpha", "c", by).result, "released");
  assert.equal(stats.forcedReleases, 2);
});

/** Operator actions on a fresh allocator, with their log lines as JSON. */
function operator(config: Record<string, number>) {
  const budgets = new Map(Object.entries(config));
  const allocator = new Allocator([...budgets], { now: () => 0 });
  const lines: Record<string, unknown>[] = [];
  let persists = 0;
  const ops = new OperatorActions({
    allocator,
    log: new Logger("info", {
      format: "json",
      write: (line) => lines.push(JSON.parse(line)),
    }),
    stats: { releases: 0, forcedReleases: 0 } as ServerStats,
    sessions: () => [],
    send: () => {},
    apply: () => {},
    progress: new QueueProgress({
      allocator,
      send: () => {},
      intervalMs: 1,
    }),
    config: budgets,
    persist: () => {
      persists++;
    },
  });
  /** The admin lines logged since the last call, as "action resname". */
  const actions = () =>
    lines.splice(0).map((l) =>
      l.event === "admin" ? `${l.action} ${l.resname}` : String(l.event)
    );
  return { ops, allocator, actions, persists: () => persists };
}

const BY = { addr: "127.0.0.1:1" };
const HUP = { addr: "SIGHUP" };

Deno.test("OperatorActions: a budget set through the API wins over reload() until cleared; each action logged once", () => {
  const { ops, allocator, actions, persists } = operator({ a: 1, b: 2 });
  ops.setBudget("a", 10, BY);
  ops.setBudget("new", 3, BY);
  assert.deepEqual(actions(), ["set-budget a", "add-resource new"]);
  assert.equal(persists(), 2);
  assert.equal(ops.source("a"), "admin");
  assert.equal(ops.source("b"), "config");
  assert.equal(ops.configBudget("a"), 1);
  assert.equal(ops.configBudget("new"), null);

  // SIGHUP with a config that changes a and b and lacks new.
  const { draining, kept } = ops.reload(new Map([["a", 5], ["b", 4]]), HUP);
  assert.deepEqual(draining, []);
  assert.deepEqual(kept, [
    { resname: "a", budget: 10, config: 5 },
    { resname: "new", budget: 3, config: null },
  ]);
  assert.deepEqual(Object.fromEntries(allocator.budgets()), {
    a: 10,
    b: 4,
    new: 3,
  });
  assert.deepEqual(actions(), ["set-budget b"], "only b changed");
  assert.equal(persists(), 2, "a reload changes no override");

  // Cleared: the config's budget at once; a name it lacks is removed.
  const cleared = ops.clearOverride("a", BY);
  assert.deepEqual(cleared, {
    result: "config",
    resource: "a",
    budget: 5,
    override: 10,
    granted: 0,
    refused: 0,
  });
  assert.equal(ops.clearOverride("new", BY).result, "removed");
  assert.deepEqual(ops.clearOverride("b", BY), { result: "none" });
  assert.deepEqual(actions(), [
    "clear-override a",
    "clear-override new",
    "clear-override b",
  ]);
  assert.equal(persists(), 4);
  assert.deepEqual(Object.fromEntries(allocator.budgets()), { a: 5, b: 4 });
  assert.equal(ops.source("a"), "config");
  assert.deepEqual(ops.overrides(), {});
});

Deno.test("OperatorActions: a resource removed through the API stays removed through reload() until cleared", () => {
  const { ops, allocator, actions } = operator({ a: 1, b: 2 });
  assert.equal(ops.removeResource("b", BY).result, "removed");
  assert.deepEqual(ops.overrides(), { b: null });
  const { kept } = ops.reload(new Map([["a", 1], ["b", 3]]), HUP);
  assert.deepEqual(kept, [{ resname: "b", budget: null, config: 3 }]);
  assert.deepEqual([...allocator.budgets().keys()], ["a"]);
  assert.equal(ops.clearOverride("b", BY).result, "config");
  assert.deepEqual(Object.fromEntries(allocator.budgets()), { a: 1, b: 3 });
  assert.deepEqual(actions(), ["remove-resource b", "clear-override b"]);
});

Deno.test("OperatorActions.clearOverride() drains a resource the config lacks while it is leased", () => {
  const { ops, allocator } = operator({ a: 1 });
  ops.setBudget("x", 2, BY);
  allocator.request("s", { cookie: "c", resname: "x", amount: 1, lease: 9 });
  const r = ops.clearOverride("x", BY);
  assert.equal(r.result, "draining");
  assert.equal(allocator.budgets().get("x"), 0);
  assert.equal(ops.source("x"), "config");
});

Deno.test("OperatorActions.restore() applies a state file's overrides, one line each and no admin action", () => {
  const { ops, allocator, actions, persists } = operator({ a: 1, b: 2 });
  ops.restore({ a: 7, b: null, c: 3 });
  assert.deepEqual(Object.fromEntries(allocator.budgets()), { a: 7, c: 3 });
  assert.deepEqual(actions(), [
    "budget set through the admin API kept",
    "budget set through the admin API kept",
    "budget set through the admin API kept",
  ]);
  assert.equal(persists(), 0, "already on disk");
  assert.deepEqual(ops.overrides(), { a: 7, b: null, c: 3 });
});

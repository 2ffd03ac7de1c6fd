import assert from "node:assert/strict";
import { HttpAdmission } from "./http_admission.ts";

function admission(maxHttp = 2): HttpAdmission<string> {
  return new HttpAdmission({
    maxHttp,
    headTimeoutMs: 5000,
    evictAfterMs: 100,
    idleTimeoutMs: 30_000,
  });
}

Deno.test("HttpAdmission.accepted() evicts the oldest waiting head once the pool is full, never a young one", () => {
  const a = admission();
  assert.equal(a.accepted("a", 0), undefined);
  assert.equal(a.accepted("b", 10), undefined);
  assert.equal(a.acceptDelay(50), 50, "the oldest may go at 100 ms");
  assert.equal(a.acceptDelay(100), 0);
  assert.equal(a.accepted("c", 100), "a");
  assert.equal(a.waiting, 2);
  // A newcomer accepted before the oldest is old enough closes nothing.
  assert.equal(a.accepted("d", 105), undefined);
  assert.equal(a.waiting, 3);
  assert.equal(a.acceptDelay(105), 5, "b may go at 110 ms");
});

Deno.test("HttpAdmission.accepted() evicts one that sent part of a head at once, the first to do so", () => {
  const a = admission(3);
  a.accepted("silent", 0);
  a.accepted("slow1", 1);
  a.accepted("slow2", 2);
  assert.ok(a.evictsSilent);
  assert.equal(a.acceptDelay(3), 97);
  a.partial("slow2");
  a.partial("slow1");
  assert.ok(!a.evictsSilent);
  assert.equal(a.acceptDelay(3), 0);
  assert.equal(a.accepted("new1", 3), "slow2");
  // Before the oldest silent one, even once that one is old enough.
  assert.equal(a.accepted("new2", 150), "slow1");
  // No partial head left: the oldest, being old enough.
  assert.ok(a.evictsSilent);
  assert.equal(a.acceptDelay(150), 0);
  assert.equal(a.accepted("new3", 150), "silent");
  // A head that completes is no longer a partial one.
  a.partial("new1");
  assert.equal(a.head("new1", false, 151), "proxy");
  a.accepted("new4", 151);
  assert.equal(a.acceptDelay(151), 99, "new2 may go at 250 ms");
});

Deno.test("HttpAdmission.head() admits upgrades outside the pools and refuses requests past maxHttp", () => {
  const a = admission();
  for (const k of ["r1", "r2", "r3", "ws"]) a.accepted(k, 0);
  assert.equal(a.head("r1", false, 1), "proxy");
  assert.equal(a.head("r2", false, 1), "proxy");
  assert.equal(a.head("r3", false, 1), "busy");
  assert.equal(a.proxied, 2);
  // A refused request leaves the head pool: its 503 goes out at once.
  assert.equal(a.waiting, 1);
  assert.equal(a.head("ws", true, 1), "upgrade");
  assert.equal(a.waiting, 0);
  a.closed("r3");
  a.closed("r1");
  assert.equal(a.proxied, 1);
  a.accepted("r4", 2);
  assert.equal(a.head("r4", false, 2), "proxy");
});

Deno.test("HttpAdmission.head() of a connection evicted meanwhile says it is closed", () => {
  const a = admission(1);
  a.accepted("old", 0);
  assert.equal(a.accepted("new", 200), "old");
  assert.equal(a.head("old", true, 201), "closed");
  assert.equal(a.head("new", false, 201), "proxy");
});

Deno.test("HttpAdmission.due() times out heads and idle proxied requests, once each", () => {
  const a = admission(10);
  a.accepted("slow", 0);
  a.accepted("late", 3000);
  a.accepted("reader", 0);
  a.head("reader", false, 10);
  assert.deepEqual(a.due(4999), []);
  assert.deepEqual(a.due(5000), ["slow"]);
  assert.deepEqual(a.due(5001), [], "taken out when due");
  // Bytes moving keep a proxied request alive.
  a.moved("reader", 20_000);
  assert.deepEqual(a.due(30_010), ["late"]);
  assert.deepEqual(a.due(49_999), []);
  assert.deepEqual(a.due(50_000), ["reader"]);
  assert.equal(a.waiting + a.proxied, 0);
});

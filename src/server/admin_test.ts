import assert from "node:assert/strict";
import {
  type AdminTarget,
  applyBudgets,
  bearerMatches,
  handleAdmin,
  parseTokenFile,
  readLimited,
} from "./admin.ts";
import { Allocator } from "../allocator/allocator.ts";

Deno.test("bearerMatches() accepts only the exact bearer token", () => {
  assert.equal(bearerMatches("Bearer s3cret-token", "s3cret-token"), true);
  assert.equal(bearerMatches("bearer s3cret-token", "s3cret-token"), true);
  assert.equal(bearerMatches("Bearer s3cret-tokeN", "s3cret-token"), false);
  assert.equal(bearerMatches("Bearer s3cret", "s3cret-token"), false);
  assert.equal(bearerMatches("s3cret-token", "s3cret-token"), false);
  assert.equal(bearerMatches("Basic s3cret-token", "s3cret-token"), false);
  assert.equal(bearerMatches(null, "s3cret-token"), false);
  assert.equal(bearerMatches("Bearer ", "s3cret-token"), false);
});

Deno.test("parseTokenFile() takes the first line and refuses short tokens", () => {
  assert.equal(parseTokenFile("  abcdefgh12 \nignored\n", "f"), "abcdefgh12");
  assert.throws(() => parseTokenFile("short\n", "f"), TypeError);
  assert.throws(() => parseTokenFile("\nabcdefgh12\n", "f"), TypeError);
});

/** The admin rules over a real allocator, as the server applies them. */
function target(alloc: Allocator): AdminTarget {
  return {
    budgets: () => alloc.budgets(),
    setBudget(name, budget) {
      const { previous } = alloc.setBudget(name, budget);
      return {
        resource: name,
        budget,
        previous: previous ?? null,
        granted: 0,
        refused: 0,
      };
    },
    removeResource(name) {
      const { result } = alloc.removeResource(name);
      return result === "busy"
        ? { result, leases: 1 }
        : result === "unknown"
        ? { result }
        : { result, refused: 0 };
    },
    clearOverride: () => ({ result: "none" }),
    forceRelease: () => ({ result: "no-lease" }),
    persisted: () => Promise.resolve(false),
  };
}

Deno.test("applyBudgets() sets, adds, removes idle resources and drains busy ones", () => {
  const alloc = new Allocator(
    Object.entries({ keep: 1, grow: 1, idle: 1, busy: 2 }),
    { now: () => 0 },
  );
  alloc.request("b", { cookie: "c", resname: "busy", amount: 1, lease: 9 });
  const { draining } = applyBudgets(
    target(alloc),
    new Map([["keep", 1], ["grow", 5], ["new", 3]]),
    { addr: "SIGHUP" },
  );
  assert.deepEqual(draining, ["busy"]);
  assert.deepEqual(
    Object.fromEntries(alloc.budgets()),
    { keep: 1, grow: 5, busy: 0, new: 3 },
  );
});

Deno.test("readLimited() stops reading a chunked body at the limit", async () => {
  let pulled = 0;
  const chunk = new Uint8Array(1024).fill(0x20);
  // An endless body: only stopping early ends this test.
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled++;
      controller.enqueue(chunk);
    },
  });
  await assert.rejects(
    () => readLimited(body, 4096),
    /Cannot parse body: larger than 4096 bytes/,
  );
  assert.ok(pulled <= 8, `read ${pulled} KiB of an endless body`);
  assert.equal(
    await readLimited(new Response('{"budget":3}').body, 4096),
    '{"budget":3}',
  );
});

Deno.test("handleAdmin() refuses a 300 MB chunked body without reading it whole", async () => {
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= 300 * 1024 * 1024) return controller.close();
      sent += 64 * 1024;
      controller.enqueue(new Uint8Array(64 * 1024));
    },
  });
  const alloc = new Allocator([["r", 1]], { now: () => 0 });
  const res = await handleAdmin(
    new Request("http://x/api/resources/r", {
      method: "POST",
      headers: { authorization: "Bearer admin-token-1" },
      body,
    }),
    { token: "admin-token-1", target: target(alloc), addr: "t" },
  );
  assert.equal(res.status, 400);
  assert.match((await res.json()).error, /larger than 4096 bytes/);
  assert.ok(sent < 1024 * 1024, `read ${sent} bytes`);
});

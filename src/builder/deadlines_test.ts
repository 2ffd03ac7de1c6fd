import assert from "node:assert/strict";
import { Deadlines } from "./deadlines.ts";

interface Item {
  name: string;
  at: number;
  ended?: boolean;
}

Deno.test("`Deadlines` calls the live items in deadline order, on one timer", async () => {
  const due: string[] = [];
  const done = Promise.withResolvers<void>();
  const deadlines = new Deadlines<Item>({
    onDue: (item) => {
      due.push(item.name);
      if (due.length === 3) done.resolve();
    },
    isLive: (item, at) => !item.ended && item.at === at,
  });
  try {
    const now = performance.now();
    const items: Item[] = [
      { name: "c", at: now + 60 },
      { name: "a", at: now + 20 },
      { name: "gone", at: now + 30, ended: false },
      { name: "b", at: now + 40 },
      { name: "moved", at: now + 10 },
    ];
    for (const item of items) deadlines.add(item.at, item);
    // Ended before its deadline: never called.
    items[2]!.ended = true;
    // A new deadline: only the new entry stands.
    items[4]!.at = now + 5_000;
    await done.promise;
    assert.deepEqual(due, ["a", "b", "c"]);
  } finally {
    deadlines.close();
  }
});

Deno.test("`Deadlines` keeps its heap bounded by the live items, not by those added", () => {
  const live = new Set<Item>();
  const deadlines = new Deadlines<Item>({
    onDue: () => assert.fail("nothing is due within the test"),
    isLive: (item) => live.has(item),
  });
  try {
    let most = 0;
    const at = performance.now() + 3_600_000;
    for (let i = 0; i < 10_000; i++) {
      const item = { name: `i${i}`, at };
      live.add(item);
      deadlines.add(at, item);
      // Ten live at any time; the rest ended early, as most leases do.
      if (live.size > 10) live.delete(live.values().next().value!);
      most = Math.max(most, deadlines.size);
    }
    assert.ok(most <= 2 * 11 + 64 + 1, `the heap reached ${most} entries`);
  } finally {
    deadlines.close();
  }
});

Deno.test("`Deadlines.close()` stops the calls, even from inside one", async () => {
  let calls = 0;
  const first = Promise.withResolvers<void>();
  const deadlines = new Deadlines<Item>({
    onDue: () => {
      calls++;
      deadlines.close();
      first.resolve();
    },
    isLive: () => true,
  });
  const now = performance.now();
  deadlines.add(now, { name: "a", at: now });
  deadlines.add(now, { name: "b", at: now });
  // Both are due in the same pass of the timer: the second would have been
  // called before the first call's promise settles.
  await first.promise;
  assert.equal(calls, 1);
});

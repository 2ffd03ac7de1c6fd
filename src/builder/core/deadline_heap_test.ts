import assert from "node:assert/strict";
import { DeadlineHeap } from "./deadline_heap.ts";

interface Item {
  name: string;
  at: number;
  ended?: boolean;
}

Deno.test("`DeadlineHeap.popDue()` gives the live items due, in deadline order", () => {
  const heap = new DeadlineHeap<Item>((item, at) =>
    !item.ended && item.at === at
  );
  const items: Item[] = [
    { name: "c", at: 60 },
    { name: "a", at: 20 },
    { name: "gone", at: 30 },
    { name: "b", at: 40 },
    { name: "moved", at: 10 },
  ];
  for (const item of items) heap.add(item.at, item);
  // Ended before its deadline: never given.
  items[2]!.ended = true;
  // A new deadline: only the new entry stands.
  items[4]!.at = 5_000;
  heap.add(5_000, items[4]!);
  assert.equal(heap.next(), 10, "stale entries count until dropped");
  const due: string[] = [];
  for (let item; (item = heap.popDue(59)) !== undefined;) due.push(item.name);
  assert.deepEqual(due, ["a", "b"]);
  assert.equal(heap.next(), 60);
  assert.equal(heap.popDue(60)?.name, "c");
  assert.equal(heap.popDue(4_999), undefined);
  assert.equal(heap.popDue(5_000)?.name, "moved");
  assert.equal(heap.next(), Infinity);
});

Deno.test("`DeadlineHeap` stays bounded by the live items, not by those added", () => {
  const live = new Set<Item>();
  const heap = new DeadlineHeap<Item>((item) => live.has(item));
  let most = 0;
  for (let i = 0; i < 10_000; i++) {
    const item = { name: `i${i}`, at: 3_600_000 };
    live.add(item);
    heap.add(item.at, item);
    // Ten live at any time; the rest ended early, as most leases do.
    if (live.size > 10) live.delete(live.values().next().value!);
    most = Math.max(most, heap.size);
  }
  assert.ok(most <= 2 * 11 + 64 + 1, `the heap reached ${most} entries`);
});

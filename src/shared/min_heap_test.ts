import assert from "node:assert/strict";
import { MinHeap } from "./min_heap.ts";

Deno.test("`MinHeap.retain()` keeps only the accepted entries, still in key order", () => {
  const heap = new MinHeap<number>();
  // A fixed, shuffled order: 0..999 by a step coprime with 1000.
  for (let i = 0; i < 1000; i++) {
    const v = (i * 617) % 1000;
    heap.push(v, v);
  }
  heap.retain((key, item) => key === item && item % 3 !== 0);
  assert.equal(heap.size, 666);
  const out: number[] = [];
  for (let v = heap.pop(); v !== undefined; v = heap.pop()) out.push(v);
  assert.deepEqual(
    out,
    Array.from({ length: 1000 }, (_, i) => i).filter((i) => i % 3 !== 0),
  );
  heap.retain(() => true);
  assert.equal(heap.size, 0);
});

import assert from "node:assert/strict";
import {
  FrameBatch,
  frameSize,
  newFrameHeader,
  readFrameHeader,
  roomFor,
} from "./ws_frames.ts";

Deno.test("`FrameBatch.append()` writes headers that `readFrameHeader()` reads back, for each payload length", () => {
  const batch = new FrameBatch();
  const sizes = [0, 125, 126, 65535, 65536];
  for (const n of sizes) batch.append(0x1, new Uint8Array(n).fill(7));
  const all = batch.take();
  assert.equal(all.length, sizes.reduce((t, n) => t + frameSize(n, false), 0));
  const header = newFrameHeader();
  let at = 0;
  for (const n of sizes) {
    assert.equal(readFrameHeader(all, at, all.length, header), true);
    assert.deepEqual(header, {
      fin: true,
      opcode: 0x1,
      masked: false,
      length: n,
      size: n < 126 ? 2 : n < 65536 ? 4 : 10,
    });
    const payload = all.subarray(at + header.size, at + header.size + n);
    assert.ok(payload.every((b) => b === 7));
    at += header.size + n;
  }
});

Deno.test("`readFrameHeader()` waits for the whole header, the mask's length included", () => {
  const batch = new FrameBatch();
  batch.append(0x1, new Uint8Array(300), Uint8Array.of(1, 2, 3, 4));
  const all = batch.take();
  const header = newFrameHeader();
  // 2 bytes, then a 16-bit length: incomplete until the fourth byte.
  for (const end of [0, 1, 2, 3]) {
    assert.equal(readFrameHeader(all, 0, end, header), false, `${end} bytes`);
  }
  assert.equal(readFrameHeader(all, 0, 4, header), true);
  assert.equal(header.masked, true);
  assert.equal(header.length, 300);
  assert.equal(header.size, 8);
});

Deno.test("`roomFor()` moves the unparsed bytes to the front, or into a bigger buffer", () => {
  const buf = Uint8Array.from({ length: 8 }, (_, i) => i);
  const same = roomFor(buf, 5, 8, 6);
  assert.equal(same, buf);
  assert.deepEqual([...same.subarray(0, 3)], [5, 6, 7]);
  const bigger = roomFor(Uint8Array.from({ length: 8 }, (_, i) => i), 6, 8, 20);
  assert.equal(bigger.length, 20);
  assert.deepEqual([...bigger.subarray(0, 2)], [6, 7]);
});

Deno.test("`FrameBatch` masks on request, says which frame starts a turn, and swaps buffers on take()", () => {
  const batch = new FrameBatch();
  const mask = Uint8Array.of(1, 2, 3, 4);
  assert.equal(batch.empty, true);
  assert.equal(batch.append(0x9, Uint8Array.of(9, 9), mask), true);
  assert.equal(batch.append(0xa, new Uint8Array(0)), false);
  const first = batch.take();
  assert.deepEqual([...first], [0x89, 0x82, 1, 2, 3, 4, 9, 9, 0x8a, 0x00]);
  assert.equal(batch.empty, true);
  // The next turn goes to the spare: what was taken stays intact until the
  // turn after, when its write has completed.
  assert.equal(batch.append(0x1, Uint8Array.of(65)), true);
  assert.deepEqual([...first.subarray(0, 2)], [0x89, 0x82]);
  assert.deepEqual([...batch.take()], [0x81, 0x01, 65]);
});

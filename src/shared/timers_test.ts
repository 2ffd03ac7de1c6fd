import assert from "node:assert/strict";
import { afterSeconds } from "./timers.ts";

/** Timers that only record: a test fires them by hand, in order. */
function fakeTimers() {
  let next = 1;
  const pending = new Map<number, { fn: () => void; ms: number }>();
  return {
    pending,
    timers: {
      setTimeout(fn: () => void, ms: number): number {
        pending.set(next, { fn, ms });
        return next++;
      },
      clearTimeout(id: number): void {
        pending.delete(id);
      },
    },
    /** Fires the only pending timer; returns its delay. */
    fire(): number {
      assert.equal(pending.size, 1, "exactly one timer is pending");
      const [id, { fn, ms }] = [...pending][0]!;
      pending.delete(id);
      fn();
      return ms;
    },
  };
}

const MAX_TIMER_MS = 2 ** 31 - 1;

Deno.test("afterSeconds() splits delays past setTimeout's limit into chunks", () => {
  const fake = fakeTimers();
  let fired = 0;
  // 30 days: setTimeout alone would clamp this to 1 ms.
  const total = 30 * 86_400 * 1000;
  afterSeconds(30 * 86_400, () => fired++, { timers: fake.timers });
  const delays = [];
  while (fired === 0) {
    delays.push(fake.fire());
    assert.ok(delays.length <= 2, "30 days take two timers");
  }
  assert.deepEqual(delays, [
    MAX_TIMER_MS,
    total - MAX_TIMER_MS,
  ]);
  assert.ok(delays.every((ms) => ms <= MAX_TIMER_MS), "no delay is clamped");
  assert.equal(fired, 1);
  assert.equal(fake.pending.size, 0, "nothing is left behind");
});

Deno.test("afterSeconds() uses one timer for a short delay, and cancels it", () => {
  const fake = fakeTimers();
  let fired = 0;
  afterSeconds(0.01, () => fired++, { timers: fake.timers });
  assert.equal(fake.fire(), 10);
  assert.equal(fired, 1);

  const cancel = afterSeconds(0.01, () => fired++, { timers: fake.timers });
  assert.equal(fake.pending.size, 1);
  cancel();
  assert.equal(fake.pending.size, 0, "the pending timer is cleared");
  assert.equal(fired, 1);
});

Deno.test("afterSeconds() cancels a long delay between chunks", () => {
  const fake = fakeTimers();
  let fired = 0;
  const cancel = afterSeconds(3 * MAX_TIMER_MS / 1000, () => fired++, {
    timers: fake.timers,
  });
  assert.equal(fake.fire(), MAX_TIMER_MS);
  cancel();
  assert.equal(fake.pending.size, 0, "the second chunk is cleared");
  assert.equal(fired, 0);
});

Deno.test("afterSeconds() fires with the real setTimeout", async () => {
  // The fakes above check the arithmetic; this, that the default is wired.
  const { promise, resolve } = Promise.withResolvers<void>();
  afterSeconds(0.01, resolve);
  await promise;
});

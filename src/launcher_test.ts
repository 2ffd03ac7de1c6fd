import assert from "node:assert/strict";
import { afterSeconds, signalExitCode } from "./launcher.ts";

Deno.test("afterSeconds() does not fire at once for delays past setTimeout's limit", async () => {
  let fired = false;
  // 30 days: setTimeout alone would clamp this to 1 ms.
  const cancel = afterSeconds(30 * 86_400, () => fired = true);
  try {
    // A 20 ms timer queued after it must come first.
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(fired, false);
  } finally {
    cancel(); // The op sanitizer fails the test if a timer is left behind.
  }
});

Deno.test("afterSeconds() fires short delays and can be cancelled", async () => {
  const { promise, resolve } = Promise.withResolvers<void>();
  afterSeconds(0.01, resolve);
  await promise;
  let fired = false;
  afterSeconds(0.01, () => fired = true)();
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(fired, false);
});

Deno.test("signalExitCode() reports signals as a shell does", () => {
  assert.equal(signalExitCode("SIGHUP"), 129);
  assert.equal(signalExitCode("SIGINT"), 130);
  assert.equal(signalExitCode("SIGTERM"), 143);
});

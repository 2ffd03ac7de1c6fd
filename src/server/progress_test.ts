import assert from "node:assert/strict";
import { Allocator } from "../allocator/allocator.ts";
import type { QueuedMessage } from "../protocol/protocol.ts";
import { QueueProgress } from "./progress.ts";

function setup() {
  const allocator = new Allocator([["r", 1]], { now: () => 0 });
  const sent: { owner: string; msg: QueuedMessage }[] = [];
  let pushed = Promise.withResolvers<void>();
  const progress = new QueueProgress({
    allocator,
    send: (owner, msg) => {
      sent.push({ owner, msg });
      pushed.resolve();
    },
    intervalMs: 1,
    now: () => 0,
  });
  const request = (owner: string, cookie: string) => {
    allocator.request(owner, { cookie, resname: "r", amount: 1, lease: 9 });
    progress.touch("r");
    progress.arm();
  };
  return {
    allocator,
    progress,
    sent,
    request,
    /** Resolves at the next message pushed. */
    nextPush: () => (pushed = Promise.withResolvers<void>()).promise,
  };
}

Deno.test("`QueueProgress` pushes positions only to the requests that asked", async () => {
  const { progress, sent, request, nextPush } = setup();
  try {
    request("b1", "holder");
    request("b1", "silent");
    request("b2", "asks");
    const pushed = nextPush();
    progress.watch("b2", "asks", ["r"]);
    await pushed;
    assert.deepEqual(sent, [{
      owner: "b2",
      msg: {
        schema: "com-warmcat-sai-resource",
        cookie: "asks",
        queued: { position: 2, eta: 18 },
      },
    }]);
  } finally {
    progress.close();
  }
});

Deno.test("`QueueProgress` pushes a watched request's new position when the queue moves", async () => {
  const { allocator, progress, sent, request, nextPush } = setup();
  try {
    request("b1", "holder");
    request("b1", "silent");
    request("b2", "asks");
    let pushed = nextPush();
    progress.watch("b2", "asks", ["r"]);
    await pushed;
    pushed = nextPush();
    // The one ahead of it withdraws: position 2 -> 1.
    allocator.release("b1", "silent");
    progress.touch("r");
    progress.arm();
    await pushed;
    assert.deepEqual(
      sent.map((s) => [s.msg.cookie, s.msg.queued.position]),
      [["asks", 2], ["asks", 1]],
    );
  } finally {
    progress.close();
  }
});

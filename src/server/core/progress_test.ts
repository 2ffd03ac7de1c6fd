import assert from "node:assert/strict";
import { Allocator } from "../../allocator/allocator.ts";
import type { QueuedMessage } from "../../protocol/protocol.ts";
import { QueueProgress } from "./progress.ts";

function setup() {
  const allocator = new Allocator([["r", 1]], { now: () => 0 });
  const sent: { owner: string; msg: QueuedMessage }[] = [];
  const progress = new QueueProgress({
    allocator,
    send: (owner, msg) => sent.push({ owner, msg }),
    intervalMs: 250,
  });
  const request = (owner: string, cookie: string) => {
    allocator.request(owner, { cookie, resname: "r", amount: 1, lease: 9 });
    progress.touch("r");
    progress.arm(0);
  };
  return { allocator, progress, sent, request };
}

Deno.test("`QueueProgress` pushes positions only to the requests that asked", () => {
  const { progress, sent, request } = setup();
  request("b1", "holder");
  request("b1", "silent");
  request("b2", "asks");
  assert.equal(progress.due, undefined, "nobody asked: nothing to push");
  progress.watch("b2", "asks", ["r"], 0);
  assert.equal(progress.due, 250, "within the interval");
  progress.wake(249);
  assert.deepEqual(sent, [], "not before it is due");
  progress.wake(250);
  assert.deepEqual(sent, [{
    owner: "b2",
    msg: {
      schema: "com-warmcat-sai-resource",
      cookie: "asks",
      queued: { position: 2, eta: 18 },
    },
  }]);
  assert.equal(progress.due, undefined);
});

Deno.test("`QueueProgress` pushes a watched request's new position when the queue moves", () => {
  const { allocator, progress, sent, request } = setup();
  request("b1", "holder");
  request("b1", "silent");
  request("b2", "asks");
  progress.watch("b2", "asks", ["r"], 0);
  progress.wake(250);
  // The one ahead of it withdraws: position 2 -> 1.
  allocator.release("b1", "silent");
  progress.touch("r");
  progress.arm(300);
  assert.equal(progress.due, 550);
  progress.wake(550);
  // Nothing moved since: nothing more is pushed.
  progress.touch("r");
  progress.arm(600);
  progress.wake(850);
  assert.deepEqual(
    sent.map((s) => [s.msg.cookie, s.msg.queued.position]),
    [["asks", 2], ["asks", 1]],
  );
});

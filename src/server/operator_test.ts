import assert from "node:assert/strict";
import { Allocator } from "../allocator/allocator.ts";
import { Logger } from "../shared/log.ts";
import { OperatorActions } from "./operator.ts";
import { QueueProgress } from "./progress.ts";
import type { Session } from "./sessions.ts";
import type { ServerStats } from "./status_document.ts";
import type { ServerWebSocket } from "./ws_server.ts";

function session(owner: string, publicId: string, name: string): Session {
  return {
    id: `c-${owner}`,
    owner,
    publicId,
    name,
    socket: { readyState: 3 } as unknown as ServerWebSocket,
    connectedAt: 0,
    lastHeard: 0,
    peer: "127.0.0.1:1",
  };
}

Deno.test("OperatorActions.forceRelease() refuses a builder that matches one builder's id and another's name", () => {
  const allocator = new Allocator([["r", 2]], { now: () => 0 });
  allocator.request("s1", { cookie: "c", resname: "r", amount: 1, lease: 9 });
  allocator.request("s2", { cookie: "c", resname: "r", amount: 1, lease: 9 });
  const sessions = [session("s1", "b3", "alpha"), session("s2", "b7", "b3")];
  const stats = {
    releases: 0,
    forcedReleases: 0,
  } as ServerStats;
  const ops = new OperatorActions({
    allocator,
    log: new Logger("error"),
    stats,
    sessions: () => sessions,
    send: () => {},
    apply: () => {},
    progress: new QueueProgress({
      allocator,
      send: () => {},
      intervalMs: 1,
      now: () => 0,
    }),
  });
  const by = { addr: "test" };
  assert.deepEqual(ops.forceRelease("b3", "c", by), {
    result: "ambiguous-builder",
    ids: ["b3", "b7"],
  });
  assert.equal(allocator.status()[0]!.allocated, 2, "nothing released");
  assert.equal(ops.forceRelease("b7", "c", by).result, "released");
  assert.equal(ops.forceRelease("alpha", "c", by).result, "released");
  assert.equal(stats.forcedReleases, 2);
});

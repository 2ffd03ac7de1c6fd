import assert from "node:assert/strict";
import { Logger } from "../../shared/log.ts";
import { RestartGuard, type RestartGuardOptions } from "./restart_guard.ts";
import type { ServerState } from "./state.ts";

const D1 = "1".repeat(64);
const D2 = "2".repeat(64);

/** A guard whose writes are recorded, to be answered by the test. */
function guard(overrides: Partial<RestartGuardOptions<string>> = {}) {
  const writes: { seq: number; state: ServerState }[] = [];
  const recorded: string[] = [];
  const settled: [number, boolean][] = [];
  const lines: Record<string, unknown>[] = [];
  const g = new RestartGuard<string>({
    path: "/state.json",
    reclaimMs: 0,
    fence: 20,
    log: new Logger("info", {
      format: "json",
      write: (l) => lines.push(JSON.parse(l)),
    }),
    current: () => [],
    begin: () => {},
    end: () => {},
    overrides: () => ({}),
    restoreOverrides: () => {},
    write: (seq, state) => writes.push({ seq, state }),
    recorded: (conn) => recorded.push(conn),
    persisted: (upTo, ok) => settled.push([upTo, ok]),
    ...overrides,
  });
  g.start({ kind: "none" }, 0);
  const first = writes.shift()!;
  g.written(first.seq, true, undefined, 0);
  return { g, writes, recorded, settled, lines };
}

Deno.test("RestartGuard retries a failed write every second with the latest state, and welcomes a hello once it is on disk", () => {
  const { g, writes, recorded, lines } = guard();
  assert.equal(g.recordSession("c1", D1), false, "not on disk yet");
  assert.equal(writes.length, 1);
  assert.deepEqual(writes[0]!.state.builders, [D1]);
  g.written(writes[0]!.seq, false, "disk full", 100);
  assert.equal(g.next, 1100, "retried a second later");
  assert.equal(g.recordSession("c2", D2), false);
  assert.equal(writes.length, 1, "nothing written before the retry");
  g.wake(1099);
  assert.equal(writes.length, 1);
  g.wake(1100);
  assert.equal(writes.length, 2, "the retry");
  assert.deepEqual(writes[1]!.state.builders, [D1, D2], "the latest state");
  g.written(writes[1]!.seq, false, "disk full", 1150);
  g.wake(2150);
  g.written(writes[2]!.seq, true, undefined, 2200);
  assert.deepEqual(recorded, ["c1", "c2"]);
  assert.equal(g.next, undefined, "nothing left to retry");
  const errors = lines.filter((l) => l.level === "error");
  assert.deepEqual(errors.map((l) => l.failures), [1, 2]);
  assert.equal(lines.at(-1)!.event, "state file written");
  assert.equal(lines.at(-1)!.failures, 2);
});

Deno.test("RestartGuard logs failed writes at most once a second", () => {
  const { g, writes, lines } = guard();
  g.recordSession("c1", D1);
  g.written(writes[0]!.seq, false, "disk full", 0);
  g.wake(1000);
  g.written(writes[1]!.seq, false, "disk full", 999.5);
  g.wake(2000);
  g.written(writes[2]!.seq, false, "disk full", 2000);
  assert.deepEqual(
    lines.filter((l) => l.level === "error").map((l) => l.failures),
    [1, 3],
  );
});

Deno.test("RestartGuard never welcomes a hello abandoned while its write failed, and drops its session", () => {
  const { g, writes, recorded } = guard();
  g.recordSession("c1", D1);
  g.written(writes[0]!.seq, false, "disk full", 0);
  g.abandon("c1");
  g.wake(1000);
  assert.deepEqual(writes[1]!.state.builders, [], "it held nothing");
  g.written(writes[1]!.seq, true, undefined, 1000);
  assert.deepEqual(recorded, []);
});

Deno.test("RestartGuard settles persist() tickets when their change is on disk, or false when a write fails", () => {
  const { g, writes, settled } = guard();
  const t1 = g.persist();
  assert.equal(t1, 1);
  const t2 = g.persist();
  g.written(writes[0]!.seq, true, undefined, 0);
  assert.deepEqual(settled, [[1, true]], "the first write held only t1");
  g.written(writes[1]!.seq, false, "disk full", 0);
  assert.deepEqual(settled, [[1, true], [t2 as number, false]]);
});

Deno.test("RestartGuard.persist() without a state file is false at once", () => {
  const g = new RestartGuard<string>({
    path: undefined,
    reclaimMs: 0,
    fence: 20,
    log: new Logger("error"),
    current: () => [],
    begin: () => {},
    end: () => {},
    overrides: () => ({}),
    restoreOverrides: () => {},
    write: () => assert.fail("nothing is written"),
    recorded: () => {},
    persisted: () => {},
  });
  g.start({ kind: "none" }, 0);
  assert.equal(g.persist(), false);
  assert.equal(g.recordSession("c1", D1), true, "welcomed at once");
});

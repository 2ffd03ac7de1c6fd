import assert from "node:assert/strict";
import { LeaseProcesses } from "./lease_processes.ts";

Deno.test("LeaseProcesses keeps a tag per builder and cookie, and a request without one clears it", () => {
  const tags = new LeaseProcesses(() => true);
  tags.note("b1", "c", { pid: 7, name: "ctest" });
  assert.deepEqual(tags.get("b1", "c"), { pid: 7, name: "ctest" });
  assert.equal(tags.get("b2", "c"), undefined);
  tags.note("b1", "c", undefined);
  assert.equal(tags.get("b1", "c"), undefined);
  tags.note("b1", "c", { pid: 7, name: "ctest" });
  tags.forget("b1", "c");
  assert.equal(tags.size, 0);
});

Deno.test("LeaseProcesses drops the tags of ended leases once it grows", () => {
  const live = new Set<string>();
  const tags = new LeaseProcesses((owner, cookie) =>
    live.has(`${owner}/${cookie}`)
  );
  live.add("b1/keep");
  tags.note("b1", "keep", { pid: 1, name: "ctest" });
  for (let i = 0; i < 5000; i++) {
    tags.note("b1", `gone${i}`, { pid: 2, name: "sh" });
  }
  assert.ok(tags.size < 1100, `kept ${tags.size}`);
  assert.deepEqual(tags.get("b1", "keep"), { pid: 1, name: "ctest" });
});

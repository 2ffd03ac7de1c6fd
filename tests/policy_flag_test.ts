import assert from "node:assert/strict";
import { parseServerArgs } from "../server.ts";
import { ServerProc } from "./_harness.ts";

Deno.test("parseServerArgs() reads --policy, default backfill", async () => {
  const base = ["--resources", "r=1"];
  assert.equal((await parseServerArgs(base)).policy.name, "backfill");
  assert.equal(
    (await parseServerArgs([...base, "--policy", "fifo"])).policy.name,
    "fifo",
  );
  await assert.rejects(
    () => parseServerArgs([...base, "--policy", "random"]),
    /--policy must be one of fifo, backfill, got "random"/,
  );
});

Deno.test("sai-server --policy fifo reports its policy in /api/status", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "r=1",
    "--policy",
    "fifo",
  ]);
  assert.equal((await server.status()).policy, "fifo");
  assert.match(server.stdout.text, /policy fifo/);
});

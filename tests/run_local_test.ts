/**
 * `make run` (`scripts/run_local.ts`): two of them side by side, each with
 * its own builder name and socket.
 *
 * @module
 */

import assert from "node:assert/strict";
import { localBuilderName } from "../scripts/run_local.ts";
import { Lines, runClient } from "./_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("localBuilderName() derives the name from the server's address, or takes SAI_NAME", () => {
  assert.equal(localBuilderName("ws://127.0.0.1:4460"), "local-4460");
  assert.equal(localBuilderName("ws://127.0.0.1:4470"), "local-4470");
  assert.equal(localBuilderName("ws://localhost:4470"), "local-4470");
  assert.equal(localBuilderName("ws://10.1.2.3:4470"), "local-10.1.2.3-4470");
  assert.equal(localBuilderName("ws://[::1]:4470"), "local-__1-4470");
  assert.equal(localBuilderName("ws://127.0.0.1:4470", ""), "local-4470");
  assert.equal(localBuilderName("ws://127.0.0.1:4470", "ci-07"), "ci-07");
  assert.throws(
    () => localBuilderName("ws://127.0.0.1:4470", "no spaces"),
    /SAI_NAME must match/,
  );
});

/** `make run`'s script, as the Makefile runs it. */
class RunLocal {
  child: Deno.ChildProcess;
  stdout: Lines;
  stderr: Lines;

  constructor(env: Record<string, string>) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "scripts/run_local.ts"],
      cwd: ROOT,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.stdout = new Lines(this.child.stdout);
    this.stderr = new Lines(this.child.stderr);
  }

  /** SIGTERM, as Ctrl-C's SIGINT would: it stops both of its programs. */
  async stop(): Promise<number> {
    try {
      this.child.kill("SIGTERM");
    } catch { /* exited */ }
    const { code } = await this.child.status;
    await Promise.all([this.stdout.done, this.stderr.done]);
    return code;
  }
}

Deno.test("two make runs side by side: each builder named and socketed after its server", async () => {
  const runtime = await Deno.makeTempDir({ prefix: "sai-run-" });
  const runs: RunLocal[] = [];
  try {
    for (const budget of [1, 2]) {
      runs.push(
        new RunLocal({
          SAI_LISTEN: "127.0.0.1:0",
          SAI_RESOURCES: `r=${budget}`,
          // The builder's default socket directory: this test's own.
          XDG_RUNTIME_DIR: runtime,
          NO_COLOR: "1",
        }),
      );
    }
    const ready = await Promise.all(runs.map(async (run) => {
      const [, port] = await run.stdout.wait(/listening on ws:\/\/\S+:(\d+)/);
      const [, name] = await run.stdout.wait(/Ready: builder "(\S+)"/);
      const [, socket] = await run.stdout.wait(
        /export SAI_BUILDER_RESOURCE_PROXY=(\S+)/,
      );
      return { port: port!, name: name!, socket: socket! };
    }));
    for (const { port, name, socket } of ready) {
      assert.equal(name, `local-${port}`);
      assert.equal(socket, `${runtime}/sai/local-${port}.sock`);
    }
    assert.notEqual(ready[0]!.socket, ready[1]!.socket);
    // Each pair works: a lease through each builder, from its own server.
    for (const [i, { socket }] of ready.entries()) {
      const got = await runClient(
        ["r", String(i + 1), "30", "--", "true"],
        { SAI_BUILDER_RESOURCE_PROXY: socket },
      );
      assert.equal(got.code, 0, got.stderr);
    }
  } finally {
    const codes = await Promise.all(runs.map((r) => r.stop()));
    await Deno.remove(runtime, { recursive: true });
    assert.deepEqual(
      codes,
      [0, 0],
      runs.map((r) => r.stdout.text + r.stderr.text).join("\n"),
    );
  }
});

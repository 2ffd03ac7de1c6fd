/**
 * Budgets set through the admin API (issue 21, item 4) on real processes:
 * they win over `--config` through SIGHUP and a restart (the state file
 * keeps them) until cleared through the API, `/api/status` says where each
 * budget comes from, and each action is logged once.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ServerProc } from "./_harness.ts";

const TOKEN = "t0ken-for-overrides-21";

async function admin(
  server: ServerProc,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${server.port}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}` },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: await res.json() };
}

/** The server's JSON log lines for `event`. */
function logged(server: ServerProc, event: string): Record<string, unknown>[] {
  return server.stderr.text.split("\n").filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((l) => l.event === event);
}

/** "action resname" of each admin line, in order. */
function actions(server: ServerProc): string[] {
  return logged(server, "admin").map((l) => `${l.action} ${l.resname}`);
}

async function sources(server: ServerProc) {
  return Object.fromEntries(
    (await server.status()).resources.map((
      r,
    ) => [r.name, [r.budget, r.budgetSource, r.configBudget]]),
  );
}

async function withConfig(
  fn: (dir: string, write: (resources: string) => Promise<void>) => unknown,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sai-overrides-" });
  try {
    await fn(dir, (resources) =>
      Deno.writeTextFile(
        `${dir}/sai.json`,
        JSON.stringify({
          "ws-protocols": [{ "com-warmcat-sai": { resources } }],
        }),
      ));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a budget set through the admin API wins over SIGHUP and a restart until cleared; /api/status names its source", async () => {
  await withConfig(async (dir, write) => {
    await write("r=2,gone=1");
    const args = [
      "--config",
      `${dir}/sai.json`,
      "--state-file",
      `${dir}/state.json`,
      "--admin-token",
      TOKEN,
      "--log-format",
      "json",
    ];
    let server = await ServerProc.start(args);
    try {
      assert.deepEqual(await sources(server), {
        r: [2, "config", 2],
        gone: [1, "config", 1],
      });
      const set = await admin(server, "POST", "/api/resources/r", {
        budget: 5,
      });
      assert.equal(set.status, 200);
      assert.deepEqual(set.json, {
        resource: "r",
        budget: 5,
        previous: 2,
        granted: 0,
        refused: 0,
        persisted: true,
      });
      const add = await admin(server, "POST", "/api/resources/extra", {
        budget: 3,
      });
      assert.equal(add.json.persisted, true);
      assert.equal(
        (await admin(server, "DELETE", "/api/resources/gone"))
          .json.persisted,
        true,
      );
      // On disk before the answer.
      const state = JSON.parse(await Deno.readTextFile(`${dir}/state.json`));
      assert.equal(state.version, 2);
      assert.deepEqual(state.overrides, { r: 5, extra: 3, gone: null });

      // The config changes r and lists gone: SIGHUP keeps both overrides,
      // says so for each, and applies the rest (db is new).
      await write("r=4,gone=1,db=2");
      server.kill("SIGHUP");
      // The last line of the reload: all before it have been read.
      await server.stderr.wait(
        /"event":"SIGHUP: budget set through the admin API kept".*"resname":"gone"/,
      );
      assert.deepEqual(await sources(server), {
        r: [5, "admin", 4],
        extra: [3, "admin", null],
        db: [2, "config", 2],
      });
      const kept = logged(
        server,
        "SIGHUP: budget set through the admin API kept",
      );
      assert.deepEqual(
        kept.map((l) => [l.level, l.resname, l.budget, l.config]),
        [
          ["warn", "r", 5, 4],
          ["warn", "extra", 3, null],
          ["warn", "gone", null, 1],
        ],
      );
      // Each action logged once; SIGHUP's only for db.
      assert.deepEqual(actions(server), [
        "set-budget r",
        "add-resource extra",
        "remove-resource gone",
        "add-resource db",
      ]);
    } finally {
      await server.stop();
    }

    // A restart keeps them (the state file), one line each, no action.
    server = await ServerProc.start(args);
    try {
      await server.stderr.wait(
        /"event":"budget set through the admin API kept".*"resname":"gone"/,
      );
      assert.deepEqual(await sources(server), {
        r: [5, "admin", 4],
        db: [2, "config", 2],
        extra: [3, "admin", null],
      });
      assert.deepEqual(
        logged(server, "budget set through the admin API kept").map((l) =>
          l.resname
        ),
        ["r", "extra", "gone"],
      );
      assert.deepEqual(actions(server), []);

      // Cleared through the API: the config's budget at once, and later.
      const clear = await admin(server, "DELETE", "/api/resources/r/override");
      assert.equal(clear.status, 200);
      assert.deepEqual(clear.json, {
        result: "config",
        resource: "r",
        budget: 4,
        override: 5,
        granted: 0,
        refused: 0,
        persisted: true,
      });
      const back = await admin(
        server,
        "DELETE",
        "/api/resources/gone/override",
      );
      assert.equal(back.json.budget, 1);
      const none = await admin(server, "DELETE", "/api/resources/db/override");
      assert.equal(none.status, 404);
      assert.match(String(none.json.error), /its budget is the config's/);
      assert.equal(
        (await admin(server, "POST", "/api/resources/r/override")).status,
        405,
      );
      assert.deepEqual(await sources(server), {
        r: [4, "config", 4],
        db: [2, "config", 2],
        extra: [3, "admin", null],
        gone: [1, "config", 1],
      });
      server.kill("SIGHUP");
      await server.stderr.wait(/"event":"SIGHUP: reloading budgets"/);
      await server.stderr.wait(/"event":"SIGHUP: budget set/);
      assert.deepEqual(
        logged(server, "SIGHUP: budget set through the admin API kept").map((
          l,
        ) => l.resname),
        ["extra"],
      );
      assert.deepEqual(actions(server), [
        "clear-override r",
        "clear-override gone",
        "clear-override db",
      ]);
      const after = JSON.parse(await Deno.readTextFile(`${dir}/state.json`));
      assert.deepEqual(after.overrides, { extra: 3 });
    } finally {
      await server.stop();
    }
  });
});

Deno.test("without a state file an admin budget still wins over SIGHUP, and the answer says it is not kept on disk", async () => {
  await withConfig(async (dir, write) => {
    await write("r=2");
    // Port 0 and no --state-file: no state file.
    await using server = await ServerProc.start([
      "--config",
      `${dir}/sai.json`,
      "--admin-token",
      TOKEN,
      "--log-format",
      "json",
    ]);
    const set = await admin(server, "POST", "/api/resources/r", { budget: 7 });
    assert.equal(set.json.persisted, false);
    server.kill("SIGHUP");
    await server.stderr.wait(/"event":"SIGHUP: budget set/);
    assert.deepEqual(await sources(server), { r: [7, "admin", 2] });
  });
});

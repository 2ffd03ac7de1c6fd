import assert from "node:assert/strict";
import { readState, StateWriter } from "./state_file.ts";
import { ANONYMOUS, MAX_STATE_BYTES, type ServerState } from "./core/state.ts";

const DIGEST = "0123456789abcdef".repeat(4);

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sai-state-unit-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("readState() reads what the writer wrote, and nothing for no file", async () => {
  await withDir(async (dir) => {
    assert.deepEqual(await readState(`${dir}/none.json`), { kind: "none" });
    const state: ServerState = {
      version: 2,
      clean: false,
      fence: 20,
      builders: [DIGEST, ANONYMOUS],
      overrides: { db: 8, old: null },
    };
    await Deno.writeTextFile(`${dir}/s.json`, JSON.stringify(state) + "\n");
    assert.deepEqual(await readState(`${dir}/s.json`), {
      kind: "state",
      state,
    });
  });
});

Deno.test("readState() reads a version 1 file (before overrides) as one with none", async () => {
  await withDir(async (dir) => {
    const v1 = { version: 1, clean: true, fence: 20, builders: [] };
    await Deno.writeTextFile(`${dir}/s.json`, JSON.stringify(v1) + "\n");
    const got = await readState(`${dir}/s.json`);
    assert.equal(got.kind, "state");
    if (got.kind !== "state") return;
    assert.equal(got.state.version, 2);
    assert.equal(got.state.clean, true);
    assert.deepEqual(Object.entries(got.state.overrides), []);
  });
});

Deno.test("readState() keeps an override of a resource named __proto__ as a name", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/s.json`,
      '{"version":2,"clean":true,"fence":1,"builders":[],"overrides":{"__proto__":3}}',
    );
    const got = await readState(`${dir}/s.json`);
    assert.equal(got.kind, "state");
    if (got.kind !== "state") return;
    assert.deepEqual(Object.entries(got.state.overrides), [["__proto__", 3]]);
  });
});

Deno.test("readState() distrusts a file that is empty, garbage, too long or wrongly shaped", async () => {
  const ok = {
    version: 2,
    clean: false,
    fence: 20,
    builders: [DIGEST],
    overrides: { db: 8 },
  };
  const cases: [string, string | Uint8Array][] = [
    ["empty", ""],
    ["garbage", "{not json"],
    ["not UTF-8", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
    // Valid JSON, but past the limit: never read whole.
    ["too long", JSON.stringify(ok) + " ".repeat(MAX_STATE_BYTES)],
    ["no version", JSON.stringify({ clean: true, fence: 1, builders: [] })],
    ["another version", JSON.stringify({ ...ok, version: 3 })],
    [
      "version 2 without overrides",
      JSON.stringify({ ...ok, overrides: undefined }),
    ],
    ["overrides a list", JSON.stringify({ ...ok, overrides: [["db", 8]] })],
    [
      "an override's bad name",
      JSON.stringify({ ...ok, overrides: { "a b": 1 } }),
    ],
    ["a negative override", JSON.stringify({ ...ok, overrides: { db: -1 } })],
    [
      "a fractional override",
      JSON.stringify({ ...ok, overrides: { db: 1.5 } }),
    ],
    ["an override too big", JSON.stringify({ ...ok, overrides: { db: 2e9 } })],
    ["an override a string", JSON.stringify({ ...ok, overrides: { db: "8" } })],
    ["clean not a boolean", JSON.stringify({ ...ok, clean: "yes" })],
    ["no fence", JSON.stringify({ ...ok, fence: undefined })],
    ["a negative fence", JSON.stringify({ ...ok, fence: -1 })],
    ["builders not a list", JSON.stringify({ ...ok, builders: DIGEST })],
    ["a builder not a digest", JSON.stringify({ ...ok, builders: ["b1"] })],
    ["a builder not a string", JSON.stringify({ ...ok, builders: [1] })],
    ["clean with builders", JSON.stringify({ ...ok, clean: true })],
    ["a list", JSON.stringify([ok])],
    ["null", "null"],
  ];
  await withDir(async (dir) => {
    for (const [what, content] of cases) {
      const path = `${dir}/s.json`;
      if (typeof content === "string") await Deno.writeTextFile(path, content);
      else await Deno.writeFile(path, content);
      const got = await readState(path);
      assert.equal(got.kind, "unknown", `${what}: ${JSON.stringify(got)}`);
    }
  });
});

Deno.test("readState() refuses a path that is not a regular file, without reading it", async () => {
  await withDir(async (dir) => {
    const fifo = `${dir}/fifo`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.equal(made.code, 0);
    for (
      const [path, what] of [
        ["/dev/full", "a character device"],
        ["/dev/zero", "a character device"],
        [dir, "a directory"],
        [fifo, "a FIFO"],
      ]
    ) {
      await assert.rejects(
        () => readState(path!),
        (err: Error) =>
          err instanceof TypeError &&
          err.message === `it is ${what}, not a regular file`,
        path,
      );
    }
  });
});

Deno.test("StateWriter.write() fails without leaving a temporary file, and a later write succeeds", async () => {
  await withDir(async (dir) => {
    // A directory, not empty, where the state file should be: a write
    // fails at its last step, the rename, until it is gone.
    await Deno.mkdir(`${dir}/s/state.json`, { recursive: true });
    await Deno.writeTextFile(`${dir}/s/state.json/x`, "");
    const state = (builders: string[]): ServerState => ({
      version: 2,
      clean: false,
      fence: 2,
      builders,
      overrides: {},
    });
    const writer = new StateWriter(`${dir}/s/state.json`);
    await assert.rejects(() => writer.write(state([])));
    await assert.rejects(() => writer.write(state([])));
    await Deno.remove(`${dir}/s/state.json`, { recursive: true });
    await writer.write(state([DIGEST]));
    await writer.idle();
    assert.deepEqual(await readState(`${dir}/s/state.json`), {
      kind: "state",
      state: state([DIGEST]),
    });
    // No temporary file is left by the failed attempts.
    const names = [];
    for await (const e of Deno.readDir(`${dir}/s`)) names.push(e.name);
    assert.deepEqual(names, ["state.json"]);
  });
});

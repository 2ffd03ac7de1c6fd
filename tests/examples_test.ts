/**
 * The examples as a user runs them: the `--config` file that
 * docs/operations.md shows, and the CMake build directories, which stay out
 * of git and of `deno task ok`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Proc, ServerProc } from "./_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** What CMake writes into `build/CMakeFiles/fetch.dir/compiler_depend.ts`. */
const CMAKE_TS = "# CMAKE generated file: DO NOT EDIT!\n# Timestamp file\n";

async function run(
  cmd: string,
  args: string[],
  cwd: string,
): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(cmd, {
    args,
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: o.code, out: text(o.stdout) + text(o.stderr) };
}

Deno.test("git ignores the examples' CMake build directories, and only them", async () => {
  for (
    const path of [
      "examples/ctest/build/CMakeFiles/fetch.dir/compiler_depend.ts",
      "examples/ctest/build-release/CTestTestfile.cmake",
      "examples/c/build/x",
    ]
  ) {
    const r = await run("git", ["check-ignore", "--no-index", path], ROOT);
    assert.equal(r.code, 0, `${path} is not ignored: ${r.out}`);
  }
  for (
    const path of [
      "examples/ctest/CMakeLists.txt",
      "examples/ctest/builder.c",
      "examples/ctest/build.cmake",
    ]
  ) {
    const r = await run("git", ["check-ignore", "--no-index", path], ROOT);
    assert.equal(r.code, 1, `${path} is ignored: ${r.out}`);
  }
});

Deno.test("deno fmt and deno lint skip the examples' build directories, not the examples", async () => {
  // A copy of the project's deno.json in a scratch tree: the check runs on
  // files made here, never on the work tree that other tests use.
  const tmp = await Deno.makeTempDir({ prefix: "sai-examples-" });
  try {
    await Deno.copyFile(`${ROOT}deno.json`, `${tmp}/deno.json`);
    for (const dir of ["build/CMakeFiles/fetch.dir", "build-debug"]) {
      await Deno.mkdir(`${tmp}/examples/ctest/${dir}`, { recursive: true });
      await Deno.writeTextFile(
        `${tmp}/examples/ctest/${dir}/compiler_depend.ts`,
        CMAKE_TS,
      );
    }
    // Beside them, a file of the example's own: still checked.
    await Deno.writeTextFile(
      `${tmp}/examples/ctest/builder.ts`,
      "export const kept = 1;\n",
    );
    const fmt = await run(Deno.execPath(), ["fmt", "--check"], tmp);
    assert.equal(fmt.code, 0, fmt.out);
    assert.match(fmt.out, /Checked 2 files/); // deno.json and builder.ts
    const lint = await run(Deno.execPath(), ["lint"], tmp);
    assert.equal(lint.code, 0, lint.out);
    assert.match(lint.out, /Checked 1 file/);

    // The same check does see a misformatted file of the example's own.
    await Deno.writeTextFile(
      `${tmp}/examples/ctest/builder.ts`,
      "export const kept=1\n",
    );
    const bad = await run(Deno.execPath(), ["fmt", "--check"], tmp);
    assert.notEqual(bad.code, 0, bad.out);
    assert.match(bad.out, /builder\.ts/);
    assert.doesNotMatch(bad.out, /compiler_depend/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("examples/sai-server.conf.json is the example in docs/operations.md, and sai-server starts on it", async () => {
  const file = await Deno.readTextFile(`${ROOT}examples/sai-server.conf.json`);
  const docs = await Deno.readTextFile(`${ROOT}docs/operations.md`);
  assert.ok(
    docs.includes("```json\n" + file + "```\n"),
    "docs/operations.md does not show examples/sai-server.conf.json as it is",
  );
  await using server = await ServerProc.start([
    "--config",
    "examples/sai-server.conf.json",
  ]);
  assert.deepEqual(
    (await server.status()).resources.map((r) => [r.name, r.budget]),
    [["warmcat_conns", 32], ["db", 4]],
  );
});

Deno.test("sai-server refuses a --config without budgets, quoting the path it expects", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "sai-config-" });
  try {
    // What the issue tried: budgets at the top level.
    await Deno.writeTextFile(
      `${tmp}/sai.json`,
      '{"resources": "warmcat_conns=4"}',
    );
    const got = await new Proc(["server.ts", "--config", `${tmp}/sai.json`])
      .finished();
    assert.equal(got.code, 2, got.stderr);
    assert.equal(got.stdout, "");
    assert.ok(
      got.stderr.startsWith(
        `sai-server: --config "${tmp}/sai.json": Cannot find budgets: expected "resources" at .vhosts[]."ws-protocols"[]."com-warmcat-sai".resources, as in {"vhosts":[{"ws-protocols":[{"com-warmcat-sai":{"resources":"warmcat_conns=4"}}]}]}\n`,
      ),
      got.stderr,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

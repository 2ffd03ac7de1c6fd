/**
 * The test command fetches only what the tests and the build use: deno
 * installs every npm package of the root lock file as soon as one is needed,
 * so a package only the benchmarks import belongs in bench/deno.json.
 *
 * @module
 */

import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url);

async function sourcesOutsideBench(dir: URL, out: string[] = []) {
  for await (const e of Deno.readDir(dir)) {
    const url = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
    const rel = url.pathname.slice(ROOT.pathname.length);
    if (e.isDirectory) {
      if (!/^(bench|\.tools|dist|node_modules|\.git)\/$/.test(rel)) {
        await sourcesOutsideBench(url, out);
      }
    } else if (/\.ts$/.test(e.name)) {
      out.push(await Deno.readTextFile(url));
    }
  }
  return out;
}

Deno.test("the root import map holds only packages used outside bench/", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", ROOT)),
  );
  const text = (await sourcesOutsideBench(ROOT)).join("\n");
  const unused = Object.keys(config.imports ?? {}).filter((name) =>
    !new RegExp(`(from |import\\()"${name}"`).test(text)
  );
  assert.deepEqual(unused, [], "move these to bench/deno.json");
  const lock = JSON.parse(await Deno.readTextFile(new URL("deno.lock", ROOT)));
  assert.deepEqual(
    [...lock.workspace.dependencies].sort(),
    Object.values(config.imports ?? {}).sort(),
    "deno.lock lists exactly the root import map",
  );
});

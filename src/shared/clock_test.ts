import assert from "node:assert/strict";
import { monotonic, toWallClock, wallClock } from "./clock.ts";

const ROOT = new URL("../../", import.meta.url);

/** Every TypeScript file of the three programs, tests and generated code aside. */
async function* sources(dir: URL): AsyncGenerator<URL> {
  for await (const e of Deno.readDir(dir)) {
    const url = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
    if (e.isDirectory) yield* sources(url);
    else if (
      e.name.endsWith(".ts") && !e.name.endsWith("_test.ts") &&
      e.name !== "_web_asset.ts"
    ) yield url;
  }
}

Deno.test("src/ reads the wall clock only through clock.ts", async () => {
  // A duration measured on the wall clock is wrong whenever the clock
  // steps: every deadline, timeout and grace uses monotonic() instead, and
  // wall-clock time is for display (clock.ts), so Date.now() appears
  // nowhere else.  getTime() and Date.parse() would be the same mistake.
  const files = [
    ...["server.ts", "builder.ts", "client.ts", "mod.ts"].map((f) =>
      new URL(f, ROOT)
    ),
  ];
  for await (const f of sources(new URL("src/", ROOT))) files.push(f);
  const offenders: string[] = [];
  for (const file of files) {
    if (file.pathname.endsWith("/src/shared/clock.ts")) continue;
    const lines = (await Deno.readTextFile(file)).split("\n");
    lines.forEach((line, i) => {
      const code = line.replace(/\/\/.*$/, "");
      if (/\bDate\.now\b|\.getTime\(\)|\bDate\.parse\b/.test(code)) {
        offenders.push(
          `${file.pathname.slice(ROOT.pathname.length)}:${
            i + 1
          }: ${line.trim()}`,
        );
      }
    });
  }
  assert.ok(files.length > 40, `found only ${files.length} source files`);
  assert.deepEqual(
    offenders,
    [],
    "wall-clock reads outside src/shared/clock.ts",
  );
});

Deno.test("toWallClock() shows a monotonic time as the wall-clock time it corresponds to", () => {
  const now = monotonic();
  const wall = toWallClock(now);
  const before = wallClock();
  assert.ok(Math.abs(wall(now) - before) <= 5);
  assert.ok(Math.abs(wall(now + 60_000) - (before + 60_000)) <= 5);
});

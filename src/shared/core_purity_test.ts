import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url);

/** The folders whose modules must be sans-I/O, and what they may import. */
const CORES = ["src/server/core/", "src/builder/core/"];

/**
 * Modules a core may import besides its own folder: pure ones, with no I/O,
 * clock or timer of their own (each is checked below as well).
 */
const PURE = [
  "src/allocator/",
  "src/protocol/",
  "src/shared/core_io.ts",
  "src/shared/min_heap.ts",
];

/** Modules a core may import types from, and nothing else: they erase. */
const TYPES_ONLY = ["src/shared/log.ts", "src/server/status_document.ts"];

/** What no core may contain: I/O, clocks, timers, randomness it cannot replay. */
const FORBIDDEN: [RegExp, string][] = [
  [/\bDeno\s*\./, "Deno's APIs"],
  [/\bDate\s*\.\s*now\b|\bnew\s+Date\s*\(/, "the wall clock"],
  [/\bperformance\s*\.\s*now\b/, "the monotonic clock"],
  [/\bset(Timeout|Interval)\s*\(|\bqueueMicrotask\s*\(/, "timers"],
  [/\bMath\s*\.\s*random\s*\(/, "unseeded randomness"],
  [/\bcrypto\s*\./, "crypto (inject what is needed)"],
  [/\bfetch\s*\(|\bWebSocket\s*\(/, "the network"],
  [/\bconsole\s*\./, "printing (log actions instead)"],
];

async function files(dir: URL): Promise<URL[]> {
  const out: URL[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      const url = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
      if (e.isDirectory) out.push(...await files(url));
      else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) {
        out.push(url);
      }
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return out;
}

function relative(url: URL): string {
  return url.pathname.slice(ROOT.pathname.length);
}

/** Checks one module's source; returns what is wrong with it. */
function check(path: string, text: string): string[] {
  const problems: string[] = [];
  const code = text
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/(^|[^:"'`])\/\/.*$/gm, "$1");
  for (const [re, what] of FORBIDDEN) {
    if (re.test(code)) problems.push(`${path} uses ${what}`);
  }
  const imports = code.matchAll(
    /\b(import\s+type|export\s+type)?[^;"]*?\bfrom\s+"([^"]+)"|\bimport\s*\(\s*"([^"]+)"/g,
  );
  for (const m of imports) {
    const typeOnly = m[1] !== undefined;
    const spec = (m[2] ?? m[3])!;
    if (!spec.startsWith(".")) {
      problems.push(`${path} imports "${spec}": only pure project modules`);
      continue;
    }
    const target = relative(new URL(spec, new URL(path, ROOT)));
    const allowed = CORES.some((c) => target.startsWith(c)) ||
      PURE.some((p) =>
        target === p || (p.endsWith("/") && target.startsWith(p))
      ) || (typeOnly && TYPES_ONLY.includes(target));
    if (!allowed) problems.push(`${path} imports ${target}, which is not pure`);
  }
  return problems;
}

Deno.test("the cores and what they import do no I/O, read no clock and arm no timer", async () => {
  const checked: string[] = [];
  const problems: string[] = [];
  const dirs = [...CORES, ...PURE.filter((p) => p.endsWith("/"))];
  const single = PURE.filter((p) => !p.endsWith("/"));
  const urls = [
    ...(await Promise.all(dirs.map((d) => files(new URL(d, ROOT))))).flat(),
    ...single.map((f) => new URL(f, ROOT)),
  ];
  for (const url of urls) {
    const path = relative(url);
    checked.push(path);
    problems.push(...check(path, await Deno.readTextFile(url)));
  }
  assert.ok(checked.some((p) => p.startsWith("src/allocator/")), "checked");
  assert.ok(checked.includes(SERVER_CORE), "the server's core is checked");
  assert.ok(
    checked.includes("src/builder/core/builder_core.ts"),
    "the builder's core is checked",
  );
  assert.deepEqual(problems, []);
});

const SERVER_CORE = "src/server/core/server_core.ts";

Deno.test("the purity check fails the server's core with a Deno call or a clock added", async () => {
  const text = await Deno.readTextFile(new URL(SERVER_CORE, ROOT));
  assert.deepEqual(check(SERVER_CORE, text), []);
  for (const line of ["Deno.exit(1);", "const t = performance.now();"]) {
    assert.equal(check(SERVER_CORE, `${text}\n${line}\n`).length, 1, line);
  }
});

Deno.test("the purity check catches a timer, a clock, Deno and an impure import", () => {
  const bad = [
    'import { x } from "../server_app.ts";',
    'import { Logger } from "../../shared/log.ts";',
    "const t = setTimeout(() => {}, 1);",
    "const n = Date.now();",
    "await Deno.readTextFile('x');",
  ].join("\n");
  const problems = check("src/server/core/bad.ts", bad);
  assert.equal(problems.length, 5, problems.join("\n"));
});

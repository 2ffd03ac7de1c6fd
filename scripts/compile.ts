// deno-lint-ignore-file no-console -- a build script: printing is its job
/**
 * `make build`: `deno compile` of one program into `dist/NAME`, with the
 * permissions `src/shared/permissions.ts` gives it (the ones the tests run
 * it with).
 *
 * `deno compile` downloads its runtime, `denort`, unless `DENORT_BIN` names
 * one.  Without a network it fails with a Rust cause chain and a backtrace,
 * and leaves an empty `dist/`: this says instead, in two lines, what
 * happened and what to do, and removes the directory it made.
 *
 * Usage: `deno run -A scripts/compile.ts dist/sai-server`
 *
 * @module
 */

import { type Program, PROGRAMS } from "../src/shared/permissions.ts";

/** The exit code when `deno compile` fails. */
const FAILED = 1;

/** The two lines for a `denort` that cannot be had, or undefined. */
export function denortAdvice(
  stderr: string,
  options: { out: string; denortBin: string | undefined },
): string | undefined {
  if (!/Setting up base binary|denort/.test(stderr)) return undefined;
  // Rust's cause chain: "    0: Setting up base binary." and so on.
  const causes = [...stderr.matchAll(/^\s*\d+: (.+)$/gm)].map((m) => m[1]!);
  let why;
  if (options.denortBin !== undefined) {
    const cause = causes.find((c) => c.includes("denort")) ?? causes.at(-1);
    why = `DENORT_BIN="${options.denortBin}" is not usable (${cause})`;
  } else {
    // "error sending request for url (U): client error (Connect): dns error: ..."
    const sending = causes.find((c) => c.startsWith("error sending request"));
    const host = sending && /\(https?:\/\/([^/)]+)/.exec(sending)?.[1];
    const cause = sending?.replace(/^.*\(Connect\): /, "") ?? causes.at(-1);
    why = `it could not download the Deno runtime, denort${
      host ? ` from ${host}` : ""
    } (${cause})`;
  }
  return [
    `make: cannot compile ${options.out}: ${why}`,
    `make: set DENORT_BIN to the denort of Deno ${Deno.version.deno} (denort-${Deno.build.target}.zip from https://github.com/denoland/deno/releases, unzipped) and run make build again`,
  ].join("\n");
}

/** Drops Rust's "Stack backtrace:" block from an error report. */
function withoutBacktrace(stderr: string): string {
  return stderr.replace(/\n*Stack backtrace:\n(?:\s+.*\n?)*/g, "\n");
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** Compiles `out` (`dist/sai-server`); returns the exit code. */
export async function compile(out: string): Promise<number> {
  const name = out.split("/").at(-1) as Program;
  const spec = PROGRAMS[name];
  if (spec === undefined) {
    console.error(
      `compile: "${out}" must end in one of ${
        Object.keys(PROGRAMS).join(", ")
      }`,
    );
    return 2;
  }
  const dir = out.includes("/") ? out.slice(0, out.lastIndexOf("/")) : ".";
  const madeDir = !(await exists(dir));
  const args = ["compile", ...spec.permissions, "-o", out, spec.entry];
  console.log(`deno ${args.join(" ")}`);
  const result = await new Deno.Command(Deno.execPath(), {
    args,
    env: { RUST_BACKTRACE: "0", NO_COLOR: "1" },
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(result.stderr);
  if (result.success) {
    Deno.stderr.writeSync(result.stderr);
    return 0;
  }
  if (madeDir) {
    // Only if empty: never what another target put there.
    await Deno.remove(dir).catch(() => {});
  }
  const advice = denortAdvice(stderr, {
    out,
    denortBin: Deno.env.get("DENORT_BIN"),
  });
  console.error(advice ?? withoutBacktrace(stderr).trimEnd());
  return FAILED;
}

if (import.meta.main) Deno.exit(await compile(Deno.args[0] ?? ""));

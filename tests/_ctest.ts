/**
 * Running real cmake and ctest from tests: whether they exist, how tests
 * run `sai-resource` (from source), and a runner with a deadline.
 *
 * @module
 */

import { runArgs } from "./_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/**
 * How the tests run sai-resource: from source, as everywhere in tests/,
 * with its compiled binary's permissions.
 */
export const SAI_RESOURCE = [Deno.execPath(), ...runArgs(`${ROOT}client.ts`)];

async function found(cmd: string): Promise<boolean> {
  return await new Deno.Command(cmd, { args: ["--version"], stdout: "null" })
    .output().then((o) => o.success, () => false);
}

export const HAVE_CMAKE = await found("cmake") && await found("ctest");
export const SKIP = HAVE_CMAKE
  ? ""
  : " (SKIPPED: cmake/ctest not found on PATH)";

/** Our environment without any SAI_ variable: each run says what it wants. */
export function baseEnv(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) => !k.startsWith("SAI_")),
  );
}

/**
 * Runs a command to completion with a clean SAI_ environment plus `env`,
 * SIGKILLing it after `timeoutMs`; returns its exit code, its combined
 * output and how long it took.
 */
export async function run(
  cmd: string,
  args: string[],
  options: { cwd: string; env?: Record<string, string>; timeoutMs?: number },
): Promise<{ code: number; out: string; ms: number }> {
  const started = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: { ...baseEnv(), ...options.env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, options.timeoutMs ?? 120_000);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    return {
      code: out.code,
      out: dec.decode(out.stdout) + dec.decode(out.stderr),
      ms: performance.now() - started,
    };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Configures the CMake project in `src` into `build`, with the sai_resource
 * module pointed at `command` (ours from source unless said) and never at
 * a `sai-resource` that happens to be installed.  Throws with cmake's
 * output when it fails.
 */
export async function configure(
  src: string,
  build: string,
  command: string[] = SAI_RESOURCE,
): Promise<void> {
  const got = await run("cmake", [
    "-S",
    src,
    "-B",
    build,
    `-DSAI_RESOURCE_COMMAND=${command.join(";")}`,
    "-DSAI_RESOURCE_EXECUTABLE=SAI_RESOURCE_EXECUTABLE-NOTFOUND",
  ], { cwd: src, env: { PATH: "/usr/bin:/bin" } });
  if (got.code !== 0) {
    throw new Error(`cmake failed (exit ${got.code}):\n${got.out}`);
  }
}

/** An interval during which `weight` units were in use. */
export interface Held {
  start: number;
  end: number;
  weight: number;
}

/** The most units in use at once; an end at t comes before a start at t. */
export function peakInUse(intervals: Held[]): number {
  const events = intervals.flatMap((h) => [
    { t: h.start, d: h.weight },
    { t: h.end, d: -h.weight },
  ]).sort((a, b) => a.t - b.t || a.d - b.d);
  let now = 0;
  let peak = 0;
  for (const e of events) {
    now += e.d;
    peak = Math.max(peak, now);
  }
  return peak;
}

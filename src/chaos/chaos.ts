// deno-lint-ignore-file no-console -- a command: printing is its job
/**
 * `deno task chaos [--seed N] [--runs K] [--mutant NAME] [--verbose]`: runs
 * the real server and builder cores, many to a process, on a simulated
 * network, clocks and disk with faults drawn from a seed, and checks the
 * promise after each run.  A violation prints the seed, the fault schedule
 * and the events that led to it, and exits 1; `--seed N --runs 1` replays
 * that run exactly.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { parseFlags } from "../shared/cli_flags.ts";
import { type Mutant, MUTANTS } from "../shared/core_io.ts";
import { runOnce, type RunResult } from "./run.ts";

const USAGE =
  `usage: deno task chaos [--seed N] [--runs K] [--mutant NAME] [--verbose]

Runs K simulations (default 1000), the first with seed N (default 1), the
next with N+1 and so on; each puts one server core, 2-8 builder cores and
5-50 clients on a simulated network, clocks and disk, injects faults drawn
from its seed, and checks that the units in use never exceed a budget, that
every request is answered, that no lease outlives its holders and that the
server's counters add up.  --mutant switches on a planted bug (${
    MUTANTS.join(", ")
  }): the run that finds it is reported.  --verbose prints each run.

Exit codes: 0 no violation, 1 a violation (its seed, faults and trace are
printed), 2 usage error.`;

/** SHA-256 as hex: what the server's shell gives its core. */
export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Options of a batch of runs. */
export interface ChaosOptions {
  seed: number;
  runs: number;
  mutant?: Mutant | undefined;
  /** Called after each run. */
  onRun?: (result: RunResult) => void;
}

/** What a batch found: the first violation, if any, and its figures. */
export interface ChaosResult {
  runs: number;
  violation?: RunResult;
  grants: number;
  events: number;
  seconds: number;
}

/** Runs seeds `seed` to `seed + runs - 1`, stopping at a violation. */
export function chaos(options: ChaosOptions): ChaosResult {
  const start = performance.now();
  let grants = 0;
  let events = 0;
  let done = 0;
  for (let i = 0; i < options.runs; i++) {
    const result = runOnce(options.seed + i, {
      mutant: options.mutant,
      hash: sha256,
    });
    done++;
    grants += result.grants;
    events += result.events;
    options.onRun?.(result);
    if (result.violation !== undefined) {
      // Run again with the trace on: the same seed, the same run.
      const traced = runOnce(options.seed + i, {
        mutant: options.mutant,
        hash: sha256,
        trace: true,
      });
      return {
        runs: done,
        violation: traced,
        grants,
        events,
        seconds: (performance.now() - start) / 1000,
      };
    }
  }
  return {
    runs: done,
    grants,
    events,
    seconds: (performance.now() - start) / 1000,
  };
}

/** The report of a violation: seed, faults, and the last events. */
export function report(result: RunResult, mutant?: Mutant): string {
  const lines = [
    `VIOLATION (seed ${result.seed}${
      mutant ? `, mutant ${mutant}` : ""
    }): ${result.violation}`,
    `world: ${result.builders} builders, ${result.clients} clients`,
    "faults:",
    ...result.faults.map((f) =>
      `  ${(f.at / 1000).toFixed(3)} s  ${f.kind} ${f.detail}`
    ),
    "last events:",
    ...result.trace.slice(-60).map((l) =>
      `  ${(l.at / 1000).toFixed(3)} s  ${l.text}`
    ),
    `replay: deno task chaos --seed ${result.seed} --runs 1${
      mutant ? ` --mutant ${mutant}` : ""
    }`,
  ];
  return lines.join("\n");
}

/** Runs `deno task chaos`; returns the exit code. */
export function main(args: string[]): number {
  let values;
  try {
    ({ values } = parseFlags({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        seed: { type: "string", default: "1" },
        runs: { type: "string", default: "1000" },
        mutant: { type: "string" },
        verbose: { type: "boolean", default: false },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    console.error(`chaos: ${(err as Error).message} (try --help)`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const seed = Number(values.seed);
  const runs = Number(values.runs);
  if (!/^[0-9]+$/.test(values.seed) || seed > 2 ** 31) {
    console.error(
      `chaos: --seed must be an integer from 0 to 2^31, got "${values.seed}" (try --help)`,
    );
    return 2;
  }
  if (!/^[1-9][0-9]*$/.test(values.runs)) {
    console.error(
      `chaos: --runs must be a positive integer, got "${values.runs}" (try --help)`,
    );
    return 2;
  }
  const mutant = values.mutant as Mutant | undefined;
  if (mutant !== undefined && !MUTANTS.includes(mutant)) {
    console.error(
      `chaos: --mutant must be one of ${
        MUTANTS.join(", ")
      }, got "${mutant}" (try --help)`,
    );
    return 2;
  }
  let reported = performance.now();
  const result = chaos({
    seed,
    runs,
    mutant,
    onRun: (r) => {
      if (values.verbose) {
        console.log(
          `seed ${r.seed}: ${r.builders} builders, ${r.clients} clients, ${r.grants} grants, ${r.events} events, faults: ${
            r.faults.map((f) => f.kind).join(", ") || "none"
          }${r.violation ? `: VIOLATION ${r.violation}` : ""}`,
        );
      } else if (performance.now() - reported > 10_000) {
        reported = performance.now();
        console.log(`... seed ${r.seed}`);
      }
    },
  });
  const rate = result.runs / result.seconds;
  if (result.violation) {
    console.log(report(result.violation, mutant));
    console.log(
      `${result.runs} runs, ${rate.toFixed(1)} runs/s: a violation`,
    );
    return 1;
  }
  console.log(
    `${result.runs} runs (seeds ${seed} to ${seed + result.runs - 1}${
      mutant ? `, mutant ${mutant}` : ""
    }), ${result.grants} grants, ${result.events} events, ${
      result.seconds.toFixed(1)
    } s (${rate.toFixed(1)} runs/s): no violation`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(main(Deno.args));

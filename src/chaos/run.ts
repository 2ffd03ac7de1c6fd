/**
 * One simulated run: a world drawn from a seed (2–8 builders, 5–50
 * clients, one or two resources), faults drawn from the same seed, then
 * the checks: the units in use (from the clients' own times) never exceed
 * a budget, every request is answered, no lease outlives its holders, and
 * the server's counters add up.
 *
 * @module
 */

import type { Mutant } from "../shared/core_io.ts";
import type { Hash } from "../server/core/tokens.ts";
import { Ledger, type Overlap, type Span } from "./ledger.ts";
import { Random } from "./random.ts";
import { RogueBuilder, SimClient } from "./clients.ts";
import {
  BUILDER_GRACE_MS,
  FENCE_MS,
  HEARTBEAT_MS,
  MAX_BACKOFF_MS,
  type TraceLine,
  World,
} from "./world.ts";

/** Virtual time the faults strike in (ms). */
const FAULTS_FROM = 2_000;
const FAULTS_UNTIL = 20_000;
/** Clients ask for nothing new after this. */
const REQUESTS_UNTIL = 22_000;
/** How long the queues may take to drain before a request counts as unanswered. */
const DRAIN_LIMIT = REQUESTS_UNTIL + 600_000;
/**
 * From the last holder's letting go to the end state: its yield, or the
 * builder grace and a heartbeat, or an expiry and its margin.
 */
const SETTLE_MS = BUILDER_GRACE_MS + HEARTBEAT_MS + 8_000;

/** One fault of a run's schedule. */
export interface Fault {
  at: number;
  kind: string;
  detail: string;
}

/** What one run found. */
export interface RunResult {
  seed: number;
  violation?: string;
  faults: Fault[];
  trace: TraceLine[];
  grants: number;
  events: number;
  builders: number;
  clients: number;
}

/** Runs the simulation for one seed. */
export function runOnce(
  seed: number,
  options: { mutant?: Mutant | undefined; trace?: boolean; hash: Hash },
): RunResult {
  const random = new Random(seed);
  const resourceCount = random.chance(0.3) ? 2 : 1;
  const budgets = new Map<string, number>();
  for (let i = 0; i < resourceCount; i++) {
    budgets.set(`r${i}`, random.int(1, 4));
  }
  const world = new World({
    seed: random.int(0, 2 ** 31),
    budgets,
    mutant: options.mutant,
    trace: options.trace ?? false,
    hash: options.hash,
  });
  const ledger = new Ledger();
  const builderCount = random.int(2, 8);
  for (let i = 0; i < builderCount; i++) world.addBuilder();
  const resources = [...budgets];
  const clientCount = random.int(5, 50);
  const clients: SimClient[] = [];
  for (let i = 0; i < clientCount; i++) {
    clients.push(
      new SimClient(world, ledger, {
        name: `k${i}`,
        builder: world.builders[i % builderCount]!,
        random: random.fork(),
        resources,
        stopAt: REQUESTS_UNTIL,
      }),
    );
  }
  world.server.start();
  for (const b of world.builders) b.start();
  for (const c of clients) c.start();
  const faults = scheduleFaults(world, ledger, random.fork(), resources);

  let violation: string | undefined;
  // Faults over and no new requests: let the queues drain (every request
  // must be answered in the end), then the graces and margins run out.
  let events = world.sched.runUntil(REQUESTS_UNTIL);
  let t = REQUESTS_UNTIL;
  while (clients.some((c) => c.busy) && t < DRAIN_LIMIT) {
    t += 2000;
    events += world.sched.runUntil(t);
  }
  events += world.sched.runUntil(t + SETTLE_MS);
  const overlap = ledger.overlap(budgets);
  if (overlap) violation = describeOverlap(overlap);
  if (!violation) violation = endState(world, ledger, clients);
  return {
    seed,
    ...(violation !== undefined && { violation }),
    faults,
    trace: world.lines,
    grants: ledger.spans.filter((s) => s.granted).length,
    events,
    builders: builderCount,
    clients: clientCount,
  };
}

function describeOverlap(o: Overlap): string {
  const holders = o.holders.map((h) =>
    `${h.client}@b${h.builder} ${h.cookie} ${
      h.parts.map((p) => `${p.resname}=${p.amount}`).join(",")
    } granted ${ms(h.granted!.at)}${
      h.letGo ? ` let go ${ms(h.letGo.at)} (${h.letGo.why})` : " held"
    }`
  );
  return `${o.units} units of ${o.resname} in use on a budget of ${o.budget} at ${
    ms(o.at)
  }: ${holders.join("; ")}`;
}

function ms(t: number): string {
  return `${(t / 1000).toFixed(3)} s`;
}

/** The checks at the end, once every fault and lease is over. */
function endState(
  world: World,
  ledger: Ledger,
  clients: SimClient[],
): string | undefined {
  const waiting = ledger.unanswered().filter((s) => s.client !== "rogue");
  if (waiting.length > 0) {
    return `unanswered: ${describe(waiting)}`;
  }
  const held = ledger.held().filter((s) => s.client !== "rogue");
  if (held.length > 0) return `still held at the end: ${describe(held)}`;
  const busy = clients.filter((c) => c.busy);
  if (busy.length > 0) {
    return `clients still waiting at the end: ${
      busy.map((c) => c.name).join(", ")
    }`;
  }
  const doc = world.server.status();
  if (!doc) return "the server is not running at the end";
  for (const r of doc.resources) {
    if (r.overBudgetGrants > 0) {
      return `the server's audit: ${r.overBudgetGrants} grants left ${r.name} over its budget`;
    }
    const rogueHeld = ledger.held().filter((s) =>
      s.client === "rogue" && s.parts.some((p) => p.resname === r.name)
    );
    if (r.leases.length > 0 && rogueHeld.length === 0) {
      return `leak: the server still counts ${r.allocated} of ${r.name} for ${
        r.leases.map((l) => `${l.builder}/${l.cookie}`).join(", ")
      }, which no holder holds`;
    }
  }
  const { grants, restores, releases, expiries, drops } = doc.stats;
  const live = doc.resources.reduce((n, r) => n + r.leases.length, 0);
  // A multi-resource lease is one lease in each of its resources.
  const multi = doc.resources.flatMap((r) => r.leases).length - new Set(
    doc.resources.flatMap((r) => r.leases.map((l) => `${l.owner}/${l.cookie}`)),
  ).size;
  if (grants + restores - releases - expiries - drops !== live - multi) {
    return `the server's counters: grants ${grants} + restores ${restores} - releases ${releases} - expiries ${expiries} - drops ${drops} != live leases ${
      live - multi
    }`;
  }
  return undefined;
}

function describe(spans: Span[]): string {
  return spans.slice(0, 5).map((s) =>
    `${s.client}@b${s.builder} ${s.cookie} asked ${ms(s.asked)}`
  ).join("; ") + (spans.length > 5 ? ` and ${spans.length - 5} more` : "");
}

/** Draws the run's faults and schedules them. */
function scheduleFaults(
  world: World,
  ledger: Ledger,
  random: Random,
  resources: [string, number][],
): Fault[] {
  const faults: Fault[] = [];
  const count = random.int(1, 5);
  const sched = world.sched;
  const builders = world.builders;
  let serverBusyUntil = 0;
  /** Each builder's link outages and freezes: chained, they add up. */
  const outages: { b: number; from: number }[] = [];
  const freezes: { b: number; from: number; to: number }[] = [];
  for (let i = 0; i < count; i++) {
    const at = random.range(FAULTS_FROM, FAULTS_UNTIL);
    const b = random.pick(builders);
    const kind = random.pick(KINDS);
    const add = (detail: string, fn: () => void) => {
      faults.push({ at, kind, detail });
      sched.at(at, () => {
        world.trace("fault", `${kind} ${detail}`);
        fn();
      });
    };
    switch (kind) {
      case "server-crash": {
        if (at < serverBusyUntil) break;
        // Every builder is cut off from the server meanwhile.
        for (const x of builders) outages.push({ b: x.index, from: at });
        const down = random.range(50, 6000);
        // What the restart finds: the file as written, garbled, or (a
        // documented limit) lost.
        const disk = random.pick(["kept", "kept", "kept", "garbled", "lost"]);
        serverBusyUntil = at + down + 1000;
        add(`down ${Math.round(down)} ms, state file ${disk}`, () => {
          world.server.crash();
          sched.after(down, () => {
            if (disk === "garbled") world.server.disk = "{garbage";
            if (disk === "lost") {
              world.server.disk = undefined;
              // A lost file is a first start: builders' holders overlap
              // until each is back and refused, or fences (documented).
              const end = sched.now + FENCE_MS + MAX_BACKOFF_MS + 2000;
              ledger.excuse(sched.now, end, "state file lost");
            }
            world.server.start();
          });
        });
        break;
      }
      case "server-restart": {
        if (at < serverBusyUntil) break;
        // Every builder is cut off from the server meanwhile.
        for (const x of builders) outages.push({ b: x.index, from: at });
        const down = random.range(50, 3000);
        serverBusyUntil = at + down + 1000;
        add(`clean stop, down ${Math.round(down)} ms`, () => {
          world.server.stop();
          sched.after(down, () => world.server.start());
        });
        break;
      }
      case "server-freeze": {
        // Every builder is cut off from the server meanwhile.
        for (const x of builders) outages.push({ b: x.index, from: at });
        const d = freezeLength(random, [
          FENCE_MS,
          BUILDER_GRACE_MS,
          BUILDER_GRACE_MS + HEARTBEAT_MS,
        ]);
        add(`${Math.round(d)} ms`, () => world.server.proc.freeze(d));
        break;
      }
      case "builder-crash": {
        const down = random.range(10, 3000);
        add(`${b.name}, down ${Math.round(down)} ms`, () => {
          // One fault at a time on a process: a crash of a dead builder is
          // no fault.
          if (!b.proc.alive) return;
          b.crash();
          sched.after(down, () => b.start());
        });
        break;
      }
      case "builder-freeze": {
        // Under the builder grace: the documented bound.  Now and then past
        // it, the documented residual limit, whose overlap is excused.
        let d = freezeLength(random, [FENCE_MS, BUILDER_GRACE_MS]);
        if (d >= BUILDER_GRACE_MS) d = BUILDER_GRACE_MS - random.range(1, 150);
        const past = random.chance(0.05);
        if (past) d = BUILDER_GRACE_MS + random.range(1, 3000);
        // One freeze at a time on a builder: back to back, they would be
        // one longer freeze.
        if (
          freezes.some((f) =>
            f.b === b.index && at < f.to + BUILDER_GRACE_MS &&
            f.from < at + d + BUILDER_GRACE_MS
          )
        ) break;
        freezes.push({ b: b.index, from: at, to: at + d });
        add(
          `${b.name} ${Math.round(d)} ms${past ? " (past the grace)" : ""}`,
          () => {
            b.proc.freeze(d);
            if (past) {
              ledger.excuse(
                sched.now + BUILDER_GRACE_MS - 1000,
                sched.now + d + 1000,
                "frozen past the builder grace",
              );
            }
          },
        );
        break;
      }
      case "link-cut": {
        outages.push({ b: b.index, from: at });
        const refuse = random.chance(0.5)
          ? random.range(0, 1000)
          : random.range(1000, 8000);
        add(
          `${b.name}, refused ${Math.round(refuse)} ms`,
          () => world.cut(b, refuse),
        );
        break;
      }
      case "link-blackhole": {
        const d = freezeLength(random, [
          HEARTBEAT_MS,
          FENCE_MS,
          BUILDER_GRACE_MS + HEARTBEAT_MS,
        ]);
        outages.push({ b: b.index, from: at });
        add(`${b.name} ${Math.round(d)} ms`, () => world.blackhole(b, d));
        break;
      }
      case "clock-step": {
        const step = random.pick([-1, 1]) *
          random.pick([30_000, 3_600_000, 86_400_000]);
        const server = random.chance(0.3);
        add(
          `${server ? "server" : b.name} ${step > 0 ? "+" : ""}${
            step / 1000
          } s`,
          () => {
            if (server) {
              world.serverWallOffset += step;
              world.server.proc.wallOffset += step;
            } else b.proc.wallOffset += step;
          },
        );
        break;
      }
      case "clock-step-in-outage": {
        // The wall clock steps while the link is down: a fence measured on
        // it would not fire.
        const d = random.range(BUILDER_GRACE_MS + HEARTBEAT_MS + 500, 12_000);
        const step = random.pick([-1, 1]) * random.pick([30_000, 3_600_000]);
        outages.push({ b: b.index, from: at });
        add(
          `${b.name} blackholed ${Math.round(d)} ms, clock ${step / 1000} s`,
          () => {
            world.blackhole(b, d);
            b.proc.wallOffset += step;
          },
        );
        break;
      }
      case "disk-full": {
        const d = random.range(500, 8000);
        add(`${Math.round(d)} ms`, () => {
          world.server.diskFailsUntil = sched.now + d;
        });
        break;
      }
      case "rogue": {
        const hold = random.range(500, 10_000);
        const rogue = new RogueBuilder(world, ledger, random.fork(), resources);
        add(`holds ${Math.round(hold)} ms`, () => rogue.strike(hold));
        break;
      }
    }
  }
  // A builder cut off and then frozen before its fence cannot fence until
  // it wakes: the bound is its time away in all, from when the server last
  // heard it, not the freeze alone.  Past it, overlaps are the documented
  // residual limit.
  for (const f of freezes) {
    for (const o of outages) {
      if (
        o.b === f.b && f.from >= o.from && f.from <= o.from + FENCE_MS &&
        f.to > o.from + BUILDER_GRACE_MS - HEARTBEAT_MS
      ) {
        ledger.excuse(
          o.from + BUILDER_GRACE_MS - HEARTBEAT_MS,
          f.to + 1000,
          "cut off, then frozen past the builder grace in all",
        );
      }
    }
  }
  return faults.sort((a, b) => a.at - b.at);
}

const KINDS = [
  "server-crash",
  "server-crash",
  "server-restart",
  "server-freeze",
  "builder-crash",
  "builder-freeze",
  "builder-freeze",
  "link-cut",
  "link-blackhole",
  "link-blackhole",
  "clock-step",
  "clock-step-in-outage",
  "disk-full",
  "rogue",
] as const;

/**
 * A fault's length: often just under or just over one of `marks` (the
 * graces where behaviour changes), else anything up to past the last.
 */
function freezeLength(random: Random, marks: number[]): number {
  if (random.chance(0.6)) {
    const mark = random.pick(marks);
    return Math.max(10, mark + random.range(-200, 200));
  }
  return random.range(10, marks[marks.length - 1]! + 3000);
}

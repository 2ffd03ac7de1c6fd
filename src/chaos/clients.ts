/**
 * The simulated clients: tests that take leases through their builder and
 * use the units until they let go, as `sai-resource` and the C client do;
 * and rogue builders that claim leases they never held.  Each records in
 * the ledger when it read its grant and when it let go: the units in use
 * are counted from there, never from the server's counters.
 *
 * @module
 */

import type { Ledger, Part, Span } from "./ledger.ts";
import type { Random } from "./random.ts";
import type { ClientEnd, SimBuilder, World } from "./world.ts";
import type { ClientId } from "../builder/core/actions.ts";

const SCHEMA = "com-warmcat-sai-resource";

/** What a client does in a cycle, drawn anew each time. */
interface Plan {
  cookie: string;
  parts: Part[];
  lease: number;
  /** How long it uses the units once granted (ms). */
  hold: number;
  progress: boolean;
  link: boolean;
  /** Never reads: its socket fills, and it never learns of its grant. */
  deaf: boolean;
  /** Dies (its connection closes) this long after asking, if not done. */
  dieAfter: number | undefined;
  /** Sends bad input instead of a request. */
  garbage: boolean;
}

/** One simulated test, cycling leases on its builder. */
export class SimClient implements ClientEnd {
  name: string;
  reading = true;
  room = 3;
  #world: World;
  #ledger: Ledger;
  #random: Random;
  #builder: SimBuilder;
  #resources: [string, number][];
  #stopAt: number;
  #id: ClientId | undefined;
  #span: Span | undefined;
  #plan: Plan | undefined;
  #buffer = "";
  /** Ends of this cycle already scheduled, cancelled when it ends. */
  #timers: { cancelled: boolean }[] = [];
  /** A cycle is under way. */
  busy = false;

  constructor(
    world: World,
    ledger: Ledger,
    options: {
      name: string;
      builder: SimBuilder;
      random: Random;
      resources: [string, number][];
      stopAt: number;
    },
  ) {
    this.#world = world;
    this.#ledger = ledger;
    this.name = options.name;
    this.#builder = options.builder;
    this.#random = options.random;
    this.#resources = options.resources;
    this.#stopAt = options.stopAt;
  }

  start(): void {
    this.#next(this.#random.range(0, 500));
  }

  #next(ms: number): void {
    this.#world.sched.after(ms, () => this.#cycle());
  }

  #plan_(): Plan {
    const r = this.#random;
    const [name, budget] = r.pick(this.#resources);
    const parts: Part[] = [{
      resname: name,
      amount: r.int(1, Math.max(1, budget)),
    }];
    if (this.#resources.length > 1 && r.chance(0.2)) {
      const [other, b2] = r.pick(this.#resources);
      if (other !== name) parts.push({ resname: other, amount: r.int(1, b2) });
    }
    // Now and then more than a budget: refused at once.
    if (r.chance(0.02)) parts[0]!.amount = budget + 1;
    // Mostly short, some long enough to be held across a whole fault.
    const lease = r.chance(0.2) ? r.int(8, 20) : r.int(1, 6);
    return {
      // A small pool of cookies per builder: reused across clients.
      cookie: r.chance(0.5)
        ? `c${this.#builder.index}-${r.int(0, 5)}`
        : `${this.name}-${r.int(0, 1e9)}`,
      parts,
      lease,
      hold: r.chance(0.15)
        ? r.range(lease * 1000, lease * 1000 + 3000)
        : r.range(20, Math.min(lease * 1000, 1500)),
      progress: r.chance(0.5),
      link: r.chance(0.3),
      deaf: r.chance(0.06),
      dieAfter: r.chance(0.06) ? r.range(10, 4000) : undefined,
      garbage: r.chance(0.02),
    };
  }

  #cycle(): void {
    const w = this.#world;
    if (w.sched.now >= this.#stopAt) return;
    const plan = this.#plan_();
    this.#plan = plan;
    this.reading = !plan.deaf;
    // A socket a client does not read fills: at once, or after a few.
    this.room = this.#random.int(0, 3);
    this.#buffer = "";
    const id = this.#builder.connect(this);
    if (id === undefined) {
      // No builder on the socket (it is restarting): try again soon.
      this.#next(this.#random.range(100, 1000));
      return;
    }
    this.busy = true;
    this.#id = id;
    w.trace(
      this.name,
      `connects to b${this.#builder.index} as client ${id}: ${plan.cookie}${
        plan.deaf ? " (deaf)" : ""
      }`,
    );
    if (plan.garbage) {
      this.#span = undefined;
      this.#builder.fromClient(
        id,
        this.#random.pick([
          "{not json",
          `{"schema":"${SCHEMA}","resname":"x y","cookie":"c","amount":1,"lease":1}`,
          `{"schema":"${SCHEMA}","cookie":"c","amount":-1,"lease":1,"resname":"r0"}`,
        ]),
      );
      this.#after(this.#random.range(50, 500), () => this.#close("done"));
      return;
    }
    const span = this.#ledger.ask(
      this.name,
      this.#builder.index,
      plan.cookie,
      plan.parts,
      w.sched.now,
    );
    this.#span = span;
    const request: Record<string, unknown> = plan.parts.length > 1
      ? {
        schema: SCHEMA,
        cookie: plan.cookie,
        lease: plan.lease,
        resources: plan.parts,
      }
      : {
        schema: SCHEMA,
        resname: plan.parts[0]!.resname,
        cookie: plan.cookie,
        amount: plan.parts[0]!.amount,
        lease: plan.lease,
      };
    if (plan.progress) request.progress = true;
    if (plan.link) request.link = true;
    if (this.#random.chance(0.2)) request.priority = this.#random.int(-5, 5);
    this.#builder.fromClient(id, JSON.stringify(request));
    if (plan.dieAfter !== undefined) {
      this.#after(plan.dieAfter, () => this.#close("died"));
    }
    if (plan.deaf) {
      // It reads nothing for a while, then gives up and closes.
      this.#after(
        this.#random.range(2000, 25000),
        () => this.#close("gave up"),
      );
    }
  }

  #after(ms: number, fn: () => void): void {
    this.#timers.push(this.#world.sched.after(ms, fn));
  }

  onMessage(id: ClientId, text: string): void {
    // Each connection is its own socket: what arrives on an old one (this
    // client has moved on) is not read.
    if (id !== this.#id) return;
    if (this.#world.tracing) {
      this.#world.trace(this.name, `reads ${text.slice(0, 120)}`);
    }
    if (!this.busy || !this.reading) return;
    const span = this.#span;
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    const w = this.#world;
    if (span === undefined) return;
    if (typeof msg.amount === "number") {
      if (span.outcome !== undefined) return;
      this.#ledger.grant(span, w.sched.step, w.sched.now);
      this.#after(this.#plan!.hold, () => this.#close("released"));
      return;
    }
    if (msg.expired === true || (msg.error !== undefined && span.granted)) {
      // Told its lease is over: it stops using the units now.
      this.#ledger.letGo(span, w.sched.step, w.sched.now, "told it is over");
      this.#after(this.#random.range(0, 50), () => this.#close("after expiry"));
      return;
    }
    if (
      msg.error !== undefined ||
      (msg.queued === undefined && msg.link === undefined)
    ) {
      if (span.outcome === undefined) span.outcome = "refused";
      this.#close("refused");
    }
  }

  onClosed(id: ClientId): void {
    if (id !== this.#id) return;
    if (this.#world.tracing) {
      this.#world.trace(this.name, `sees client ${this.#id} closed`);
    }
    if (!this.busy) return;
    const w = this.#world;
    const span = this.#span;
    if (span) {
      this.#ledger.letGo(span, w.sched.step, w.sched.now, "builder closed");
      // The builder went away (or closed it): the client has its answer.
      if (span.outcome === undefined) span.outcome = "abandoned";
    }
    this.#end();
  }

  /** Closes its connection: it lets go of the units at once. */
  #close(why: string): void {
    if (!this.busy) return;
    if (this.#world.tracing) {
      this.#world.trace(this.name, `closes client ${this.#id}: ${why}`);
    }
    const w = this.#world;
    const span = this.#span;
    if (span) {
      this.#ledger.letGo(span, w.sched.step, w.sched.now, why);
      if (span.outcome === undefined) span.outcome = "abandoned";
    }
    if (this.#id !== undefined) this.#builder.clientClosed(this.#id);
    this.#end();
  }

  #end(): void {
    this.busy = false;
    for (const t of this.#timers) t.cancelled = true;
    this.#timers = [];
    this.#id = undefined;
    this.#span = undefined;
    this.#next(this.#random.range(0, 2000));
  }
}

/**
 * A rogue builder: another local user's program that says hello with a
 * session of its own and "restores" leases it never held, then holds them
 * as if real.  Only what the server grants it counts as in use.
 */
export class RogueBuilder {
  #world: World;
  #ledger: Ledger;
  #random: Random;
  #resources: [string, number][];

  constructor(
    world: World,
    ledger: Ledger,
    random: Random,
    resources: [string, number][],
  ) {
    this.#world = world;
    this.#ledger = ledger;
    this.#random = random;
    this.#resources = resources;
  }

  /** Connects, claims, holds for `holdMs`, leaves. */
  strike(holdMs: number): void {
    const w = this.#world;
    const r = this.#random;
    const session = `rogue-session-${r.int(0, 1e12)}`;
    w.trace("rogue", "strikes");
    const link = w.server.rogue(
      (text) => this.#onMessage(text),
      () => this.#closed(),
    );
    if (!link) return;
    this.#send = link.send;
    this.#leave = link.close;
    link.send(
      JSON.stringify({
        schema: SCHEMA,
        hello: { name: `rogue${r.int(0, 99)}`, session },
      }),
    );
    const n = r.int(1, 3);
    for (let i = 0; i < n; i++) {
      const [name, budget] = r.pick(this.#resources);
      const cookie = `rogue-${r.int(0, 1e9)}`;
      const amount = r.int(1, budget);
      const span = this.#ledger.ask("rogue", -1, cookie, [{
        resname: name,
        amount,
      }], w.sched.now);
      this.#spans.set(cookie, span);
      link.send(JSON.stringify({
        schema: SCHEMA,
        resname: name,
        cookie,
        amount,
        lease: r.int(5, 60),
        restore: "lease",
        id: `x.${r.int(0, 99)}`,
      }));
    }
    link.send(JSON.stringify({ schema: SCHEMA, restored: true }));
    w.sched.after(holdMs, () => this.#leave?.());
  }

  #spans = new Map<string, Span>();
  #send: ((text: string) => void) | undefined;
  #leave: (() => void) | undefined;

  #onMessage(text: string): void {
    const w = this.#world;
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    const span = this.#spans.get(String(msg.cookie));
    if (!span) return;
    if (typeof msg.amount === "number" && span.outcome === undefined) {
      this.#ledger.grant(span, w.sched.step, w.sched.now);
    } else if (msg.expired === true || msg.error !== undefined) {
      this.#ledger.letGo(span, w.sched.step, w.sched.now, "told");
      if (span.outcome === undefined) span.outcome = "refused";
    }
  }

  #closed(): void {
    const w = this.#world;
    for (const span of this.#spans.values()) {
      this.#ledger.letGo(span, w.sched.step, w.sched.now, "left");
      if (span.outcome === undefined) span.outcome = "abandoned";
    }
    this.#spans.clear();
  }
}

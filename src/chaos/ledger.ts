/**
 * What the simulated clients saw, and the checks made on it: the units in
 * use, counted from the holders' own grant and letting-go moments (never
 * from the server's counters), never exceed a budget; every request is
 * answered.
 *
 * @module
 */

/** One resource and amount of a lease. */
export interface Part {
  resname: string;
  amount: number;
}

/** How a request ended, from its client's side. */
export type Outcome =
  /** Granted: the client holds it from `granted` until `letGo`. */
  | "granted"
  | "refused"
  /** The client gave up (died, or withdrew) before an answer. */
  | "abandoned";

/** One request and, if granted, its holding. */
export interface Span {
  id: number;
  client: string;
  builder: number;
  cookie: string;
  parts: Part[];
  /** Virtual time it was asked. */
  asked: number;
  outcome?: Outcome;
  /** Step and time the client read its grant. */
  granted?: { step: number; at: number };
  /** Step and time it let go: closed, or read that the lease is over. */
  letGo?: { step: number; at: number; why: string };
}

/** A time window in which overlaps are a documented residual limit. */
export interface Excuse {
  from: number;
  to: number;
  why: string;
}

/** A moment when more units were in use than a budget allows. */
export interface Overlap {
  resname: string;
  units: number;
  budget: number;
  at: number;
  step: number;
  holders: Span[];
}

/** Every request of a run. */
export class Ledger {
  spans: Span[] = [];
  excuses: Excuse[] = [];
  #next = 1;

  ask(
    client: string,
    builder: number,
    cookie: string,
    parts: Part[],
    at: number,
  ): Span {
    const span: Span = {
      id: this.#next++,
      client,
      builder,
      cookie,
      parts,
      asked: at,
    };
    this.spans.push(span);
    return span;
  }

  grant(span: Span, step: number, at: number): void {
    span.outcome = "granted";
    span.granted = { step, at };
  }

  letGo(span: Span, step: number, at: number, why: string): void {
    if (span.letGo === undefined && span.granted !== undefined) {
      span.letGo = { step, at, why };
    }
  }

  excuse(from: number, to: number, why: string): void {
    this.excuses.push({ from, to, why });
  }

  /**
   * The first moment (in event order) when the units in use exceeded a
   * budget, outside the excused windows; undefined if there was none.
   */
  overlap(budgets: Map<string, number>): Overlap | undefined {
    interface Change {
      step: number;
      at: number;
      span: Span;
      delta: 1 | -1;
    }
    const changes: Change[] = [];
    for (const span of this.spans) {
      if (!span.granted) continue;
      changes.push({ ...span.granted, span, delta: 1 });
      if (span.letGo) {
        changes.push({
          step: span.letGo.step,
          at: span.letGo.at,
          span,
          delta: -1,
        });
      }
    }
    // Letting go before taking at the same step: a step is one event.
    changes.sort((a, b) => a.step - b.step || a.delta - b.delta);
    const inUse = new Map<string, number>();
    const holders = new Set<Span>();
    for (const c of changes) {
      if (c.delta === 1) holders.add(c.span);
      else holders.delete(c.span);
      for (const p of c.span.parts) {
        const units = (inUse.get(p.resname) ?? 0) + c.delta * p.amount;
        inUse.set(p.resname, units);
        const budget = budgets.get(p.resname) ?? 0;
        if (c.delta === 1 && units > budget && !this.#excused(c.at)) {
          return {
            resname: p.resname,
            units,
            budget,
            at: c.at,
            step: c.step,
            holders: [...holders].filter((h) =>
              h.parts.some((q) => q.resname === p.resname)
            ),
          };
        }
      }
    }
    return undefined;
  }

  /** Requests that got no answer (the client waited to the end). */
  unanswered(): Span[] {
    return this.spans.filter((s) => s.outcome === undefined);
  }

  /** Holdings still held at the end. */
  held(): Span[] {
    return this.spans.filter((s) => s.granted && !s.letGo);
  }

  #excused(at: number): boolean {
    return this.excuses.some((e) => e.from <= at && at <= e.to);
  }
}

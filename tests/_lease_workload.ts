/**
 * Clients that cycle leases on builders' Unix sockets (speaking the protocol
 * as the C `sai-resource` does, or running the real one in launcher mode),
 * and a ledger of what they hold, timed by the holders themselves: the only
 * honest measure of how many units are in use.
 *
 * A client counts a unit as in use from the moment it reads its grant until
 * the moment it closes the connection, whether it gives the lease back of
 * its own accord or because the builder told it the lease was over (an
 * `expired` message, a refusal, or the connection closing under it).  A
 * holder that is never told keeps using the unit: that is the danger the
 * fault tests look for.
 *
 * Timestamps are taken in the test's process on one clock ({@linkcode now}),
 * except the moment a launched command stops, which the command reports
 * itself (it is in use until it has stopped, not until we hear of it).
 *
 * @module
 */

import { JsonObjectSplitter } from "../src/protocol/json_splitter.ts";
import { runArgs } from "./_harness.ts";
import {
  isGrant,
  isRefusal,
  parseServerMessage,
  ProtocolError,
  SCHEMA,
  type ServerMessage,
} from "../src/protocol/protocol.ts";

/**
 * The clock every figure is read on: ms since the epoch, monotonic within
 * this process (`performance`), comparable with a command's `date +%s%N`.
 */
export function now(): number {
  return performance.timeOrigin + performance.now();
}

/** How one request went. */
export interface Span {
  client: string;
  /** The builder group the client belongs to. */
  group: string;
  cookie: string;
  amount: number;
  /** When the request was made ({@linkcode now}). */
  asked: number;
  /** When it was answered, if it was. */
  answered?: number;
  outcome?: "granted" | "refused" | "closed";
  /** Why a refusal or a close before the grant happened. */
  detail?: string;
  /** When the holder stopped using the unit (granted requests only). */
  letGo?: number;
  /** Who ended the holding: the client itself, or the builder. */
  ended?: "released" | "expired" | "lost";
}

/** The most units in use at once, from the holders' timestamps. */
export interface Peak {
  units: number;
  /** When it was first reached ({@linkcode now}). */
  at: number;
  /** The cookies in use then. */
  holders: string[];
}

/** Totals over a time window, from the holders' own timestamps. */
export interface WindowFigures {
  /** Seconds during which a unit was free and a request waited. */
  idleWhileWaiting: number;
  /** The longest such stretch, in seconds. */
  longestIdleWhileWaiting: number;
  /** Grants made in the window. */
  grants: number;
  /**
   * Holdings the builder told were over (`expired`) in the window: with
   * leases longer than the test, fenced ones.
   */
  expired: number;
  /** Holdings whose connection closed under them (the builder died). */
  lost: number;
}

/**
 * What every client of a workload shares: live counts to steer the test
 * by, and every span, from which the figures are computed afterwards (a
 * command reports when it stopped after the fact).
 */
export class Ledger {
  readonly budget: number;
  readonly spans: Span[] = [];
  /** Units held right now, as far as the clients know yet. */
  inUse = 0;
  /** Requests waiting for an answer right now. */
  waiting = 0;
  /** Bumped on every change, so a reader can tell nothing moved meanwhile. */
  version = 0;
  #held = new Map<string, Span>();

  constructor(budget: number) {
    this.budget = budget;
  }

  /** Cookies held right now. */
  held(): string[] {
    return [...this.#held.keys()].sort();
  }

  /** Units held right now by one group's clients. */
  heldBy(group: string): number {
    let n = 0;
    for (const s of this.#held.values()) if (s.group === group) n += s.amount;
    return n;
  }

  asked(span: Span): void {
    this.spans.push(span);
    this.waiting++;
    this.version++;
  }

  /** Takes back {@linkcode asked}: the request never reached a builder. */
  neverAsked(span: Span): void {
    this.spans.splice(this.spans.indexOf(span), 1);
    this.waiting--;
    this.version++;
  }

  answered(span: Span, outcome: NonNullable<Span["outcome"]>): void {
    span.answered = now();
    span.outcome = outcome;
    this.waiting--;
    if (outcome === "granted") {
      this.inUse += span.amount;
      this.#held.set(span.cookie, span);
    }
    this.version++;
  }

  /** The holder stopped using the unit, at `at` if it said when. */
  letGo(span: Span, ended: NonNullable<Span["ended"]>, at = now()): void {
    span.letGo = at;
    span.ended = ended;
    this.inUse -= span.amount;
    this.#held.delete(span.cookie);
    this.version++;
  }

  /** Grants so far, all groups or one. */
  grants(group?: string): number {
    return this.spans.filter((s) =>
      s.outcome === "granted" && (group === undefined || s.group === group)
    ).length;
  }

  /**
   * Every change in time order: [time, change in units in use, change in
   * requests waiting, span].  At equal times a letting go comes first.
   */
  #events(): [number, number, number, Span][] {
    const events: [number, number, number, Span][] = [];
    for (const s of this.spans) {
      events.push([s.asked, 0, 1, s]);
      if (s.answered === undefined) continue;
      events.push([s.answered, 0, -1, s]);
      if (s.outcome !== "granted") continue;
      events.push([s.answered, s.amount, 0, s]);
      if (s.letGo !== undefined) events.push([s.letGo, -s.amount, 0, s]);
    }
    return events.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  }

  /** The most units in use at once. */
  peak(): Peak {
    const peak: Peak = { units: 0, at: 0, holders: [] };
    let inUse = 0;
    const holding = new Set<string>();
    for (const [t, units, , span] of this.#events()) {
      if (units === 0) continue;
      inUse += units;
      if (units > 0) holding.add(span.cookie);
      else holding.delete(span.cookie);
      if (inUse > peak.units) {
        Object.assign(peak, { units: inUse, at: t, holders: [...holding] });
      }
    }
    return peak;
  }

  /** Figures for the window [from, to] ({@linkcode now}). */
  window(from: number, to: number): WindowFigures {
    let idle = 0;
    let longest = 0;
    let stretch = 0;
    let inUse = 0;
    let waiting = 0;
    let t = from;
    const account = (until: number) => {
      const a = Math.max(t, from);
      const b = Math.min(until, to);
      const starved = inUse < this.budget && waiting > 0;
      if (starved && b > a) {
        idle += b - a;
        stretch += b - a;
        longest = Math.max(longest, stretch);
      } else if (!starved && b > a) {
        stretch = 0;
      }
      t = Math.max(t, until);
    };
    for (const [at, units, waits] of this.#events()) {
      account(at);
      inUse += units;
      waiting += waits;
    }
    account(to);
    const inWindow = (t: number | undefined) =>
      t !== undefined && t >= from && t <= to;
    return {
      idleWhileWaiting: idle / 1000,
      longestIdleWhileWaiting: longest / 1000,
      grants:
        this.spans.filter((s) =>
          s.outcome === "granted" && inWindow(s.answered)
        ).length,
      expired:
        this.spans.filter((s) => s.ended === "expired" && inWindow(s.letGo))
          .length,
      lost: this.spans.filter((s) => s.ended === "lost" && inWindow(s.letGo))
        .length,
    };
  }
}

/** Options for {@linkcode ProtocolClient} and {@linkcode LauncherClient}. */
export interface CyclingClientOptions {
  name: string;
  group: string;
  /** The builder's socket (read at each connect: a restarted builder). */
  socket: () => string;
  ledger: Ledger;
  resource: string;
  /** Seconds asked for in each request. */
  lease: number;
  /** Shortest and longest hold of an ordinary cycle, in ms. */
  holdMs: [number, number];
}

/**
 * A test job that takes a lease, uses it for a while, gives it back and
 * asks again, until stopped.  With {@linkcode holdThrough} set it keeps
 * whatever it holds (as a long test would) until
 * {@linkcode letGoThrough} or until the builder ends the lease.
 */
export abstract class CyclingClient {
  readonly options: CyclingClientOptions;
  /** Keep holdings past the ordinary hold time. */
  holdThrough = false;
  /** Attempts that found no builder. */
  unreachable = 0;
  protected stopping = false;
  #through = Promise.withResolvers<void>();
  #cycles = 0;
  #running: Promise<void> | undefined;

  constructor(options: CyclingClientOptions) {
    this.options = options;
  }

  start(): void {
    this.#running ??= this.#loop();
  }

  /** Ends holdings kept by {@linkcode holdThrough}, and stops keeping them. */
  letGoThrough(): void {
    this.holdThrough = false;
    this.#through.resolve();
    this.#through = Promise.withResolvers<void>();
  }

  /**
   * Stops after the current cycle: a waiting request is still waited for
   * (it must be answered), a holding ends at its ordinary time.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    this.letGoThrough();
    await this.#running;
  }

  /** Gives up at once, waiting or holding (the end of a failed test). */
  abstract abort(): Promise<void>;

  /**
   * One request: resolves once it is over (refused, or granted and let
   * go), or with "unreachable" when no builder answered the door.
   */
  protected abstract cycle(cookie: string): Promise<void | "unreachable">;

  /**
   * Resolves when an ordinary holding is done: after a random hold time,
   * and, while {@linkcode holdThrough} is set, not before the test lets go.
   */
  protected async ordinaryHold(): Promise<"released"> {
    const [lo, hi] = this.options.holdMs;
    await pause(lo + Math.random() * (hi - lo));
    while (this.holdThrough) await this.#through.promise;
    return "released";
  }

  protected newSpan(cookie: string): Span {
    return {
      client: this.options.name,
      group: this.options.group,
      cookie,
      amount: 1,
      asked: now(),
    };
  }

  async #loop(): Promise<void> {
    while (!this.stopping) {
      const cookie = `${this.options.name}-${++this.#cycles}`;
      if (await this.cycle(cookie) === "unreachable") {
        // The builder is down (killed, restarting): a job would retry.
        this.unreachable++;
        await pause(50);
      }
    }
  }
}

/**
 * Speaks the protocol on the builder's Unix socket itself, byte for byte as
 * the C `sai-resource` does.  It lets go the moment it is told: an
 * `expired`, an error, or the connection closing under it.
 */
export class ProtocolClient extends CyclingClient {
  #conn: Deno.UnixConn | undefined;

  abort(): Promise<void> {
    this.stopping = true;
    this.letGoThrough();
    try {
      this.#conn?.close();
    } catch {
      // Closed.
    }
    return Promise.resolve();
  }

  protected async cycle(cookie: string): Promise<void | "unreachable"> {
    let conn: Deno.UnixConn;
    try {
      conn = await Deno.connect({
        transport: "unix",
        path: this.options.socket(),
      });
    } catch {
      return "unreachable";
    }
    this.#conn = conn;
    try {
      return await this.#request(conn, cookie);
    } finally {
      this.#conn = undefined;
      try {
        conn.close();
      } catch {
        // Closed.
      }
    }
  }

  async #request(
    conn: Deno.UnixConn,
    cookie: string,
  ): Promise<void | "unreachable"> {
    const { ledger } = this.options;
    const span = this.newSpan(cookie);
    const messages = readMessages(conn);
    try {
      // The C client's bytes: one object, no newline.
      await writeAll(
        conn,
        JSON.stringify({
          schema: SCHEMA,
          resname: this.options.resource,
          cookie,
          amount: span.amount,
          lease: this.options.lease,
        }),
      );
    } catch {
      // Never asked: the builder went away between connect and write.
      return "unreachable";
    }
    ledger.asked(span);
    for (;;) {
      const next = await messages.next();
      if (next.done) {
        span.detail = "the builder closed the connection before answering";
        ledger.answered(span, "closed");
        return;
      }
      const msg = next.value;
      if ("cookie" in msg && msg.cookie !== cookie && msg.cookie !== "") {
        continue;
      }
      if (isGrant(msg)) break;
      if (isRefusal(msg)) {
        span.detail = msg.error;
        ledger.answered(span, "refused");
        return;
      }
    }
    ledger.answered(span, "granted");
    const endedByBuilder = (async () => {
      for await (const msg of messages) {
        if ("expired" in msg) return "expired" as const;
        if ("error" in msg) return "lost" as const;
      }
      return "lost" as const;
    })().catch(() => "lost" as const);
    const ended = await Promise.race([endedByBuilder, this.ordinaryHold()]);
    try {
      conn.close();
    } catch {
      // Closed by the builder.
    }
    ledger.letGo(span, ended);
  }
}

const ROOT = new URL("..", import.meta.url).pathname;

/**
 * The launched command: it uses the unit until SIGTERM (which the launcher
 * passes on, from us or from `--kill-on-expiry`), and says when it stopped.
 */
const COMMAND = [
  "sh",
  "-c",
  `trap 'echo "fault-matrix: stopped $(date +%s%N)" >&2; kill $s; exit 0' TERM
sleep 30 & s=$!
wait $s`,
];

/**
 * Runs the real `sai-resource` in launcher mode with `--kill-on-expiry`
 * (`sai-resource r 1 LEASE COOKIE --kill-on-expiry --grace 1 -- sh …`).
 * In use from its "granted" line until the command says it stopped, or,
 * should it not get to say so, until the launcher and the command have both
 * exited (the end of their shared output pipes): a command told its lease is
 * over counts as let go only once it has actually stopped.  An ordinary hold
 * ends with SIGTERM to the launcher, which passes it on.
 */
export class LauncherClient extends CyclingClient {
  #child: Deno.ChildProcess | undefined;

  async abort(): Promise<void> {
    this.stopping = true;
    this.letGoThrough();
    const child = this.#child;
    if (!child) return;
    kill(child, "SIGTERM");
    const timer = setTimeout(() => kill(child, "SIGKILL"), 5000);
    await child.status;
    clearTimeout(timer);
  }

  protected async cycle(cookie: string): Promise<void | "unreachable"> {
    const { ledger } = this.options;
    const span = this.newSpan(cookie);
    const child = new Deno.Command(Deno.execPath(), {
      // With exactly the compiled sai-resource's permissions.
      args: [
        ...runArgs("client.ts"),
        this.options.resource,
        String(span.amount),
        String(this.options.lease),
        cookie,
        "--socket",
        this.options.socket(),
        "--kill-on-expiry",
        "--grace",
        "1",
        "--",
        ...COMMAND,
      ],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    ledger.asked(span);
    let stderr = "";
    const granted = Promise.withResolvers<boolean>();
    const output = (async () => {
      const out = child.stdout.pipeTo(new WritableStream());
      for await (
        const chunk of child.stderr.pipeThrough(new TextDecoderStream())
      ) {
        stderr += chunk;
        if (/: granted /.test(stderr)) granted.resolve(true);
      }
      await out;
      granted.resolve(false);
    })();
    try {
      if (!(await granted.promise)) {
        await output;
        await child.status;
        if (/Cannot reach the builder/.test(stderr)) {
          ledger.neverAsked(span);
          return "unreachable";
        }
        span.detail = stderr.trim();
        ledger.answered(
          span,
          /closed the connection/.test(stderr) ? "closed" : "refused",
        );
        return;
      }
      ledger.answered(span, "granted");
      const told = output.then(() => "done" as const);
      const first = await Promise.race([told, this.ordinaryHold()]);
      if (first === "released") kill(child, "SIGTERM");
      // Its output ends when the launcher and the command are both gone.
      await output;
      await child.status;
      const stopped = stderr.match(/fault-matrix: stopped (\d+)/);
      ledger.letGo(
        span,
        /expired while/.test(stderr)
          ? "expired"
          : /was lost/.test(stderr)
          ? "lost"
          : "released",
        stopped ? Number(stopped[1]) / 1e6 : now(),
      );
    } finally {
      this.#child = undefined;
    }
  }
}

function kill(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // Exited.
  }
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function writeAll(conn: Deno.UnixConn, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}

async function* readMessages(
  conn: Deno.UnixConn,
): AsyncGenerator<ServerMessage> {
  const splitter = new JsonObjectSplitter();
  const buf = new Uint8Array(4096);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      return; // Reset, or closed by us.
    }
    if (n === null) return;
    for (const text of splitter.push(buf.subarray(0, n))) {
      try {
        yield parseServerMessage(text);
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
      }
    }
  }
}

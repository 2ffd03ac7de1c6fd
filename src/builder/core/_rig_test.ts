/**
 * A builder core on fake clocks, for its tests: records what it asks for,
 * wakes it when its wake-up time comes, and speaks for the server.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Mutant, Tick } from "../../shared/core_io.ts";
import { SCHEMA } from "../../protocol/protocol.ts";
import type { BuilderAction, ClientId } from "./actions.ts";
import { BuilderCore, type BuilderCoreOptions } from "./builder_core.ts";

/** A message the core sent to a client. */
export interface Sent {
  msg: Record<string, unknown>;
  seq: number | undefined;
}

/** Options of {@linkcode Rig}: the core's, and where the clocks start. */
export interface RigOptions extends Partial<BuilderCoreOptions> {
  mono?: number;
  wall?: number;
  mutant?: Mutant;
}

export class Rig {
  core: BuilderCore;
  mono: number;
  wall: number;
  /** Every action, in order. */
  actions: BuilderAction[] = [];
  /** The wake-up asked for; Infinity when none. */
  wakeAt = Infinity;
  /** What the core sent to the server, parsed, since the last `takeServer()`. */
  server: Record<string, unknown>[] = [];
  /** What the core sent to each client, parsed. */
  clients = new Map<ClientId, Sent[]>();
  /** Clients the core closed. */
  closed = new Set<ClientId>();
  /** Whether a link connection is asked for or open. */
  linked = false;
  connects = 0;
  /** Whether the server answers pings (after the event that sent them). */
  pongs = true;
  #nextClient = 1;
  #depth = 0;
  #pings: number[] = [];

  constructor(options: RigOptions = {}) {
    this.mono = options.mono ?? 1_000;
    this.wall = options.wall ?? 1_750_000_000_000;
    this.core = new BuilderCore({
      server: "ws://127.0.0.1:4460",
      name: "b",
      session: "s".repeat(32),
      random: () => 0.5,
      logLevel: "debug",
      ...options,
    });
  }

  get tick(): Tick {
    return { mono: this.mono, wall: this.wall };
  }

  /** Carries out what the core asked (records it). */
  run(actions: readonly BuilderAction[]): void {
    this.#depth++;
    try {
      this.#record(actions);
    } finally {
      this.#depth--;
    }
    while (this.#depth === 0 && this.#pings.length > 0 && this.linked) {
      this.fromServer({ pong: this.#pings.shift()! });
    }
    this.#pings = [];
  }

  #record(actions: readonly BuilderAction[]): void {
    for (const a of actions) {
      this.actions.push(a);
      switch (a.type) {
        case "wake":
          this.wakeAt = a.at;
          break;
        case "connect":
          this.linked = true;
          this.connects++;
          break;
        case "linkClose":
          this.linked = false;
          break;
        case "linkSend":
          assert.ok(this.linked, `sent on no link: ${a.text}`);
          this.server.push(JSON.parse(a.text));
          if (this.pongs && a.text.includes('"ping"')) {
            this.#pings.push(JSON.parse(a.text).ping);
          }
          break;
        case "clientSend": {
          assert.ok(!this.closed.has(a.id), `sent to closed client ${a.id}`);
          const list = this.clients.get(a.id) ?? [];
          list.push({ msg: JSON.parse(a.text), seq: a.seq });
          this.clients.set(a.id, list);
          break;
        }
        case "clientClose":
          this.closed.add(a.id);
          break;
      }
    }
  }

  /** Moves both clocks on by `ms`, waking the core whenever it asked. */
  advance(ms: number): void {
    const until = this.mono + ms;
    while (this.wakeAt <= until) {
      const at = Math.max(this.mono, this.wakeAt);
      this.wall += at - this.mono;
      this.mono = at;
      this.wakeAt = Infinity;
      this.run(this.core.wake(this.tick));
    }
    this.wall += until - this.mono;
    this.mono = until;
  }

  /** Takes what was sent to the server so far. */
  takeServer(): Record<string, unknown>[] {
    const out = this.server;
    this.server = [];
    return out;
  }

  /** What client `id` was sent, messages only. */
  to(id: ClientId): Record<string, unknown>[] {
    return (this.clients.get(id) ?? []).map((s) => s.msg);
  }

  /** Log lines' messages so far. */
  logs(): string[] {
    return this.actions.flatMap((a) => a.type === "log" ? [a.msg] : []);
  }

  start(): void {
    this.run(this.core.start(this.tick));
  }

  opened(): void {
    this.run(this.core.linkOpened(this.tick));
  }

  fromServer(msg: Record<string, unknown>): void {
    this.run(
      this.core.linkMessage(
        this.tick,
        JSON.stringify({ schema: SCHEMA, ...msg }),
      ),
    );
  }

  welcome(welcome: Record<string, unknown> = { id: "b1" }): void {
    this.fromServer({ welcome });
  }

  /** Starts, opens and is welcomed; returns with nothing sent recorded. */
  up(welcome?: Record<string, unknown>): void {
    this.start();
    this.opened();
    this.welcome(welcome);
    this.takeServer();
  }

  linkClosed(code = 1006, reason = "", error = "Connection reset"): void {
    this.linked = false;
    this.run(this.core.linkClosed(this.tick, { code, reason, error }));
  }

  /** A client connects and sends a request (`r`, 1, 30 s, and `req`). */
  client(req: Record<string, unknown> = {}): ClientId {
    const id = this.silentClient();
    this.request(id, req);
    return id;
  }

  /** A client connects and sends `msg` as it is (a release, a check). */
  other(msg: Record<string, unknown>): ClientId {
    const id = this.silentClient();
    this.send(id, msg);
    return id;
  }

  /** A connection that says nothing yet. */
  silentClient(): ClientId {
    const id = this.#nextClient++;
    this.run(this.core.clientOpened(this.tick, id));
    return id;
  }

  request(id: ClientId, req: Record<string, unknown> = {}): void {
    this.send(id, {
      resname: "r",
      cookie: `c${id}`,
      amount: 1,
      lease: 30,
      ...req,
    });
  }

  send(id: ClientId, msg: Record<string, unknown>): void {
    this.run(
      this.core.clientMessage(
        this.tick,
        id,
        JSON.stringify({ schema: SCHEMA, ...msg }),
      ),
    );
  }

  clientClosed(id: ClientId): void {
    this.run(this.core.clientClosed(this.tick, id));
  }

  /** Completes every write the core waits for on client `id`. */
  written(id: ClientId): void {
    for (const s of this.clients.get(id) ?? []) {
      if (s.seq !== undefined) {
        this.run(this.core.clientWritten(this.tick, s.seq));
      }
    }
  }

  grant(cookie: string, extra: Record<string, unknown> = {}): void {
    this.fromServer({
      cookie,
      amount: 1,
      resname: "r",
      lease: 30,
      expires: this.wall + 30_000,
      ...extra,
    });
  }
}

/**
 * The simulated world of one run: a server core, builder cores and their
 * clients as processes on one virtual clock, each with clocks of its own
 * (monotonic, and a wall clock that can step), a network between them
 * (ordered per connection, delayed, cut or blackholed) and a disk for the
 * server's state file (writes that fail, a file lost or garbled).  Every
 * process runs the real core; only sockets, timers and files are
 * simulated.
 *
 * @module
 */

import type { Tick } from "../shared/core_io.ts";
import type { Mutant } from "../shared/core_io.ts";
import { Random } from "./random.ts";
import { Scheduler } from "./scheduler.ts";
import { ServerCore } from "../server/core/server_core.ts";
import type { ServerAction } from "../server/core/actions.ts";
import {
  formatState,
  parseState,
  type StoredState,
} from "../server/core/state.ts";
import { BuilderCore } from "../builder/core/builder_core.ts";
import type { BuilderAction, ClientId } from "../builder/core/actions.ts";
import { type Hash } from "../server/core/tokens.ts";

/** Timing of a run, in virtual milliseconds (the fault matrix's). */
export const HEARTBEAT_MS = 1000;
export const BUILDER_GRACE_MS = 4 * HEARTBEAT_MS;
export const FENCE_MS = BUILDER_GRACE_MS / 2;
/** The builder's longest pause between reconnects. */
export const MAX_BACKOFF_MS = 5000;

/** A process's clocks and liveness. */
export class Process {
  name: string;
  /** Added to virtual time to make this process's monotonic clock. */
  monoBase: number;
  /** Added to virtual time (and a fixed epoch) to make its wall clock. */
  wallOffset = 0;
  alive = true;
  /** Until when (virtual) it is stopped (SIGSTOP); 0: running. */
  frozenUntil = 0;
  /** What arrived while it was stopped, to handle in order on waking. */
  inbox: (() => void)[] = [];
  #world: World;

  constructor(world: World, name: string) {
    this.#world = world;
    this.name = name;
    this.monoBase = 1e6 + Math.floor(world.random.next() * 1e9);
  }

  tick(): Tick {
    const now = this.#world.sched.now;
    return {
      mono: now + this.monoBase,
      wall: WALL_EPOCH + now + this.wallOffset,
    };
  }

  /** Virtual time of this process's monotonic time `mono`. */
  virtual(mono: number): number {
    return mono - this.monoBase;
  }

  get frozen(): boolean {
    return this.frozenUntil > this.#world.sched.now;
  }

  /** Runs `fn` now, or when the process wakes; never if it is dead. */
  deliver(fn: () => void): void {
    if (!this.alive) return;
    if (this.frozen || this.inbox.length > 0) this.inbox.push(fn);
    else fn();
  }

  freeze(ms: number): void {
    const until = this.#world.sched.now + ms;
    this.frozenUntil = Math.max(this.frozenUntil, until);
    this.#world.sched.at(this.frozenUntil, () => this.#thaw());
  }

  #thaw(): void {
    if (this.frozen || !this.alive) return;
    const due = this.inbox;
    this.inbox = [];
    for (let i = 0; i < due.length; i++) {
      if (this.frozen || !this.alive) {
        this.inbox.push(...due.slice(i));
        return;
      }
      due[i]!();
    }
  }
}

/** 2026-01-01: the wall clock's origin in every run (it may step). */
const WALL_EPOCH = 1_767_225_600_000;

/** One event of the run, kept for the report of a violation. */
export interface TraceLine {
  at: number;
  text: string;
}

/** A builder ↔ server connection. */
class Link {
  id: number;
  builder: SimBuilder;
  /** Both ends know it is open. */
  open = false;
  /** Gone for the server (closed() reported). */
  serverGone = false;
  /** Gone for the builder (it closed it, or was told). */
  builderGone = false;
  /** Reset: nothing more is delivered. */
  reset = false;
  lastToServer = 0;
  lastToBuilder = 0;
  /** A rogue's connection: what the server says goes to these. */
  rogue?: { onMessage: (text: string) => void; onClosed: () => void };

  constructor(id: number, builder: SimBuilder) {
    this.id = id;
    this.builder = builder;
  }
}

/** The path between one builder and the server: where links are faulted. */
export interface Path {
  /** Until when new connections are refused (a cut with the route down). */
  refuseUntil: number;
  /** Blackholed: nothing moves until it heals. */
  blackholed: boolean;
  /** What waits for the path to heal, in order. */
  held: (() => void)[];
}

/** Options of a world. */
export interface WorldOptions {
  seed: number;
  budgets: Map<string, number>;
  mutant?: Mutant | undefined;
  trace: boolean;
  hash: Hash;
}

/** The server: its process, core, disk and connections. */
export class SimServer {
  proc: Process;
  core: ServerCore | undefined;
  /** Accepting connections (its start-up write done). */
  listening = false;
  /** The state file's bytes; undefined: no file. */
  disk: string | undefined = undefined;
  /** Until when writes fail (a full disk). */
  diskFailsUntil = 0;
  links = new Map<number, Link>();
  #world: World;
  #wake: { cancelled: boolean } | undefined;
  runs = 0;

  constructor(world: World) {
    this.#world = world;
    this.proc = new Process(world, "server");
  }

  /** Starts a server process (again): reads the disk, writes, listens. */
  start(): void {
    const w = this.#world;
    this.proc = new Process(w, "server");
    this.proc.wallOffset = w.serverWallOffset;
    this.runs++;
    this.core = new ServerCore({
      budgets: w.budgets,
      heartbeat: HEARTBEAT_MS / 1000,
      builderGrace: BUILDER_GRACE_MS / 1000,
      hash: w.hash,
      logLevel: w.tracing ? "info" : "error",
      idPrefix: `r${this.runs}.`,
      stateFile: "/sim/state.json",
      mutant: w.mutant,
    });
    const stored: StoredState = this.disk === undefined
      ? { kind: "none" }
      : parseState(this.disk);
    w.trace("server", `start (${stored.kind})`);
    this.#run(this.core.start(stored, this.proc.tick()), true);
  }

  /** kill -9: everything it had is gone; the links reset. */
  crash(): void {
    const w = this.#world;
    w.trace("server", "crash");
    this.proc.alive = false;
    this.listening = false;
    this.core = undefined;
    if (this.#wake) this.#wake.cancelled = true;
    for (const link of this.links.values()) w.resetLink(link, "server");
    this.links.clear();
  }

  /** SIGTERM: a clean stop, then gone. */
  stop(): void {
    const core = this.core;
    if (!core || !this.proc.alive) return;
    this.#world.trace("server", "clean stop");
    this.#run(core.shutdown(this.proc.tick()));
    this.crash();
  }

  /** A builder connects: undefined if refused. */
  accept(link: Link): boolean {
    if (!this.proc.alive || !this.listening || !this.core) return false;
    this.links.set(link.id, link);
    this.proc.deliver(() =>
      this.#call((c, t) => c.open(link.id, `10.0.0.${link.builder.index}:1`, t))
    );
    return true;
  }

  deliverMessage(link: Link, text: string): void {
    this.proc.deliver(() => {
      if (link.serverGone) return;
      this.#call((c, t) => c.message(link.id, text, t));
    });
  }

  deliverPong(link: Link): void {
    this.proc.deliver(() => {
      if (link.serverGone) return;
      this.#call((c, t) => c.heard(link.id, t));
    });
  }

  /** The builder's end closed (or reset): the server sees it go. */
  deliverClosed(link: Link): void {
    this.proc.deliver(() => {
      if (link.serverGone) return;
      link.serverGone = true;
      this.links.delete(link.id);
      this.#call((c, t) => c.closed(link.id, t));
    });
  }

  status() {
    return this.core?.status(this.proc.tick());
  }

  /**
   * A rogue connects straight to the server (loopback, no builder): its
   * sends and its leaving, or undefined if the server does not answer.
   */
  rogue(
    onMessage: (text: string) => void,
    onClosed: () => void,
  ): { send: (text: string) => void; close: () => void } | undefined {
    const w = this.#world;
    const link = new Link(w.nextLink(), w.rogueBuilder);
    link.rogue = { onMessage, onClosed };
    if (!this.accept(link)) return undefined;
    link.open = true;
    return {
      send: (text) => {
        if (link.reset || link.builderGone) return;
        w.sched.after(0.2, () => {
          if (!link.reset && !link.serverGone) this.deliverMessage(link, text);
        });
      },
      close: () => {
        if (link.builderGone) return;
        link.builderGone = true;
        w.sched.after(0.2, () => this.deliverClosed(link));
        onClosed();
      },
    };
  }

  #call(fn: (core: ServerCore, tick: Tick) => ServerAction[]): void {
    if (!this.core || !this.proc.alive) return;
    this.#run(fn(this.core, this.proc.tick()));
  }

  #run(actions: readonly ServerAction[], starting = false): void {
    const w = this.#world;
    let startWrite = starting;
    for (const a of actions) {
      switch (a.type) {
        case "send": {
          const link = this.links.get(Number(a.conn));
          if (link) w.toBuilder(link, a.text);
          break;
        }
        case "close": {
          const link = this.links.get(Number(a.conn));
          if (!link) break;
          w.trace("server", `close c${a.conn} ${a.code} ${a.reason}`);
          link.serverGone = true;
          this.links.delete(link.id);
          w.closeFromServer(link);
          // The core expects closed() once the connection is gone.
          const id = a.conn;
          w.sched.after(
            0.1,
            () =>
              this.proc.deliver(() => this.#call((c, t) => c.closed(id, t))),
          );
          break;
        }
        case "ping": {
          const link = this.links.get(Number(a.conn));
          if (link) w.pingBuilder(link);
          break;
        }
        case "write": {
          const ok = w.sched.now >= this.diskFailsUntil;
          if (ok) this.disk = formatState(a.state);
          const seq = a.seq;
          const starting_ = startWrite;
          startWrite = false;
          w.sched.after(w.random.range(0.1, 3), () => {
            if (!this.proc.alive || !this.core) return;
            if (starting_ && !ok) {
              // A start whose first write fails does not start: systemd
              // restarts it a second later.
              w.trace("server", "start-up write failed: exits");
              this.crash();
              w.sched.after(1000, () => this.start());
              return;
            }
            this.proc.deliver(() =>
              this.#call((c, t) =>
                c.written(
                  seq,
                  ok,
                  ok ? undefined : "No space left on device",
                  t,
                )
              )
            );
            if (starting_ && ok) {
              this.listening = true;
              w.trace("server", "listening");
            }
          });
          break;
        }
        case "wake": {
          if (this.#wake) this.#wake.cancelled = true;
          this.#wake = w.sched.at(this.proc.virtual(a.at), () => {
            this.#wake = undefined;
            this.proc.deliver(() => this.#call((c, t) => c.wake(t)));
          });
          break;
        }
        case "log":
          if (w.tracing) {
            w.trace("server", `${a.level} ${a.msg} ${fields(a.fields)}`);
          }
          break;
        case "changed":
        case "persisted":
          break;
      }
    }
  }
}

function fields(f: Record<string, unknown>): string {
  return Object.entries(f).map(([k, v]) =>
    `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`
  ).join(" ");
}

/** What a simulated client is told, through its connection to a builder. */
export interface ClientEnd {
  /** A message (one line of JSON) from the builder, on connection `id`. */
  onMessage(id: ClientId, text: string): void;
  /** The builder closed connection `id`, or died. */
  onClosed(id: ClientId): void;
  /** Whether it reads what arrives (one that does not fills its socket). */
  reading: boolean;
  /** Messages its socket holds unread before writes to it block. */
  room: number;
}

/** A client connection to a builder, as the builder's end sees it. */
class ClientConn {
  id: ClientId;
  end: ClientEnd;
  open = true;
  /** Closed by the client: the builder's writes to it fail. */
  clientGone = false;
  /** Messages in the socket the client has not read. */
  unread = 0;
  /** Writes waiting for room, with their seq. */
  blocked: { text: string; seq: number | undefined }[] = [];
  /** The builder asked to close it once its writes are out. */
  closing = false;

  constructor(id: ClientId, end: ClientEnd) {
    this.id = id;
    this.end = end;
  }
}

/** A builder: its process, core, link and clients. */
export class SimBuilder {
  index: number;
  name: string;
  proc: Process;
  core: BuilderCore | undefined;
  link: Link | undefined;
  /** A connection attempt on its way (its link before it opens). */
  clients = new Map<ClientId, ClientConn>();
  /** Stopped for good (a name clash). */
  refused = false;
  #world: World;
  #wake: { cancelled: boolean } | undefined;
  #nextClient = 1;
  #incarnation = 0;

  constructor(world: World, index: number) {
    this.#world = world;
    this.index = index;
    this.name = `b${index}`;
    this.proc = new Process(world, this.name);
  }

  start(): void {
    const w = this.#world;
    const wall = this.proc.wallOffset;
    this.proc = new Process(w, this.name);
    this.proc.wallOffset = wall;
    this.#incarnation++;
    const random = w.random.fork();
    this.core = new BuilderCore({
      server: "ws://sim:4460",
      name: this.name,
      session: `session-${this.name}-${this.#incarnation}-${
        Math.floor(random.next() * 1e9)
      }`,
      heartbeatMs: HEARTBEAT_MS,
      maxBackoffMs: MAX_BACKOFF_MS,
      logLevel: w.tracing ? "info" : "error",
      random: () => random.next(),
      mutant: w.mutant,
    });
    w.trace(this.name, "start");
    this.#call((c, t) => c.start(t));
  }

  /** kill -9: its clients' connections close, its link resets. */
  crash(): void {
    const w = this.#world;
    w.trace(this.name, "crash");
    this.proc.alive = false;
    this.core = undefined;
    if (this.#wake) this.#wake.cancelled = true;
    if (this.link) w.resetLink(this.link, "builder");
    this.link = undefined;
    for (const conn of this.clients.values()) {
      conn.open = false;
      w.sched.after(0.05, () => {
        if (!conn.clientGone) conn.end.onClosed(conn.id);
      });
    }
    this.clients.clear();
  }

  /** A client connects: its end, or undefined if the builder is gone. */
  connect(end: ClientEnd): ClientId | undefined {
    if (!this.proc.alive || !this.core || this.refused) return undefined;
    const id = this.#nextClient++;
    this.clients.set(id, new ClientConn(id, end));
    this.proc.deliver(() => this.#call((c, t) => c.clientOpened(t, id)));
    return id;
  }

  fromClient(id: ClientId, text: string): void {
    const w = this.#world;
    w.sched.after(0.05, () =>
      this.proc.deliver(() => {
        if (!this.clients.get(id)?.open) return;
        this.#call((c, t) => c.clientMessage(t, id, text));
      }));
  }

  /** The client closed its end. */
  clientClosed(id: ClientId): void {
    const conn = this.clients.get(id);
    if (!conn) return;
    conn.clientGone = true;
    this.#world.sched.after(0.05, () =>
      this.proc.deliver(() => {
        const c = this.clients.get(id);
        if (!c) return;
        this.clients.delete(id);
        c.open = false;
        // Its pending writes fail now.
        for (const b of c.blocked) this.#written(b.seq);
        c.blocked = [];
        this.#call((core, t) => core.clientClosed(t, id));
      }));
  }

  /** The client read what its socket held: blocked writes move on. */
  drained(id: ClientId): void {
    const conn = this.clients.get(id);
    if (!conn) return;
    conn.unread = 0;
    const blocked = conn.blocked;
    conn.blocked = [];
    for (const b of blocked) this.#write(conn, b.text, b.seq);
    this.#maybeClose(conn);
  }

  fromServer(text: string): void {
    this.#call((c, t) => c.linkMessage(t, text));
  }

  linkOpened(link: Link): void {
    if (this.link !== link) return;
    this.#call((c, t) => c.linkOpened(t));
  }

  linkClosed(link: Link, code: number, reason: string): void {
    if (this.link !== link) return;
    this.link = undefined;
    link.builderGone = true;
    this.#call((c, t) => c.linkClosed(t, { code, reason }));
  }

  linkFailed(link: Link, error: string): void {
    if (this.link !== link) return;
    this.link = undefined;
    link.builderGone = true;
    this.#call((c, t) => c.linkFailed(t, error));
  }

  #call(fn: (core: BuilderCore, tick: Tick) => readonly BuilderAction[]): void {
    if (!this.core || !this.proc.alive) return;
    this.#run(fn(this.core, this.proc.tick()));
  }

  #written(seq: number | undefined): void {
    if (seq === undefined) return;
    // Reported as its own event, never inside one.
    this.#world.sched.after(
      0,
      () =>
        this.proc.deliver(() => this.#call((c, t) => c.clientWritten(t, seq))),
    );
  }

  #write(conn: ClientConn, text: string, seq: number | undefined): void {
    if (!conn.open || conn.clientGone) {
      this.#written(seq);
      return;
    }
    if (
      conn.blocked.length > 0 ||
      (!conn.end.reading && conn.unread >= conn.end.room)
    ) {
      conn.blocked.push({ text, seq });
      return;
    }
    if (!conn.end.reading) conn.unread++;
    const end = conn.end;
    this.#world.sched.after(0.05, () => {
      if (!conn.clientGone) end.onMessage(conn.id, text);
    });
    this.#written(seq);
  }

  #maybeClose(conn: ClientConn): void {
    if (!conn.closing || conn.blocked.length > 0 || !conn.open) return;
    conn.open = false;
    this.clients.delete(conn.id);
    const end = conn.end;
    const id = conn.id;
    // The client may have closed its end first: then it is told nothing
    // (its next connection is another).
    if (!conn.clientGone) {
      this.#world.sched.after(0.1, () => {
        if (!conn.clientGone) end.onClosed(id);
      });
    }
    // The shell's read loop then ends, and says so.
    this.#world.sched.after(
      0.1,
      () =>
        this.proc.deliver(() => this.#call((c, t) => c.clientClosed(t, id))),
    );
  }

  #run(actions: readonly BuilderAction[]): void {
    const w = this.#world;
    // The core may reuse its array: take what it says before calling again.
    for (const a of [...actions]) {
      switch (a.type) {
        case "clientSend": {
          const conn = this.clients.get(a.id);
          if (conn) this.#write(conn, a.text, a.seq);
          else this.#written(a.seq);
          break;
        }
        case "clientClose": {
          const conn = this.clients.get(a.id);
          if (!conn) break;
          conn.closing = true;
          this.#maybeClose(conn);
          break;
        }
        case "connect":
          w.connectBuilder(this);
          break;
        case "linkSend":
          if (this.link?.open) w.toServer(this.link, a.text);
          break;
        case "linkClose": {
          const link = this.link;
          this.link = undefined;
          if (link) {
            link.builderGone = true;
            w.closeFromBuilder(link);
          }
          break;
        }
        case "wake": {
          if (this.#wake) this.#wake.cancelled = true;
          this.#wake = w.sched.at(this.proc.virtual(a.at), () => {
            this.#wake = undefined;
            this.proc.deliver(() => this.#call((c, t) => c.wake(t)));
          });
          break;
        }
        case "log":
          if (w.tracing) {
            w.trace(this.name, `${a.level} ${a.msg} ${fields(a.fields)}`);
          }
          break;
        case "connected":
          break;
        case "refused":
          w.trace(this.name, `refused: ${a.message}`);
          this.refused = true;
          break;
      }
    }
  }
}

/** The world: the scheduler, the processes and the network. */
export class World {
  sched = new Scheduler();
  random: Random;
  budgets: Map<string, number>;
  mutant: Mutant | undefined;
  hash: Hash;
  tracing: boolean;
  lines: TraceLine[] = [];
  server: SimServer;
  builders: SimBuilder[] = [];
  paths: Path[] = [];
  /** The server's wall-clock offset (kept across its restarts). */
  serverWallOffset = 0;
  /** Stands for rogues' links, which no builder owns. */
  rogueBuilder: SimBuilder;
  #nextLink = 1;

  constructor(options: WorldOptions) {
    this.random = new Random(options.seed);
    this.budgets = options.budgets;
    this.mutant = options.mutant;
    this.hash = options.hash;
    this.tracing = options.trace;
    this.server = new SimServer(this);
    this.rogueBuilder = new SimBuilder(this, -1);
  }

  nextLink(): number {
    return this.#nextLink++;
  }

  trace(who: string, text: string): void {
    if (!this.tracing) return;
    this.lines.push({ at: this.sched.now, text: `${who}: ${text}` });
  }

  addBuilder(): SimBuilder {
    const b = new SimBuilder(this, this.builders.length);
    this.builders.push(b);
    this.paths.push({ refuseUntil: 0, blackholed: false, held: [] });
    return b;
  }

  /** Network delay on a builder's path, in ms. */
  #delay(): number {
    return this.random.chance(0.05)
      ? this.random.range(5, 60)
      : this.random.range(0.2, 3);
  }

  /** Runs `fn` on path `b` now, or once it heals. */
  #onPath(b: SimBuilder, fn: () => void): void {
    const path = this.paths[b.index]!;
    if (path.blackholed) path.held.push(fn);
    else fn();
  }

  /** Heals a blackholed path: what it held moves on, in order. */
  heal(b: SimBuilder): void {
    const path = this.paths[b.index]!;
    path.blackholed = false;
    const held = path.held;
    path.held = [];
    for (const fn of held) fn();
  }

  connectBuilder(b: SimBuilder): void {
    const link = new Link(this.nextLink(), b);
    b.link = link;
    this.trace(b.name, `connect l${link.id}`);
    this.#onPath(b, () => {
      this.sched.after(this.#delay(), () => {
        if (b.link !== link) return; // Given up meanwhile.
        const path = this.paths[b.index]!;
        if (path.blackholed) {
          // The route went down on the way: the SYN is lost until it heals.
          path.held.push(() => this.connectBuilderAgain(b, link));
          return;
        }
        if (this.sched.now < path.refuseUntil || !this.server.accept(link)) {
          b.proc.deliver(() => b.linkFailed(link, "Connection refused"));
          return;
        }
        link.open = true;
        this.sched.after(
          this.#delay(),
          () => b.proc.deliver(() => b.linkOpened(link)),
        );
      });
    });
  }

  /** A connection attempt held by a blackhole goes on. */
  connectBuilderAgain(b: SimBuilder, link: Link): void {
    if (b.link !== link) return;
    if (
      this.sched.now < this.paths[b.index]!.refuseUntil ||
      !this.server.accept(link)
    ) {
      b.proc.deliver(() => b.linkFailed(link, "Connection refused"));
      return;
    }
    link.open = true;
    this.sched.after(
      this.#delay(),
      () => b.proc.deliver(() => b.linkOpened(link)),
    );
  }

  toServer(link: Link, text: string): void {
    this.#onPath(link.builder, () => {
      const at = Math.max(this.sched.now + this.#delay(), link.lastToServer);
      link.lastToServer = at;
      this.sched.at(at, () => {
        if (link.reset || link.serverGone) return;
        this.#onPath(
          link.builder,
          () => this.server.deliverMessage(link, text),
        );
      });
    });
  }

  toBuilder(link: Link, text: string): void {
    if (link.rogue) {
      const rogue = link.rogue;
      this.sched.after(0.2, () => {
        if (!link.reset && !link.builderGone) rogue.onMessage(text);
      });
      return;
    }
    this.#onPath(link.builder, () => {
      const at = Math.max(this.sched.now + this.#delay(), link.lastToBuilder);
      link.lastToBuilder = at;
      this.sched.at(at, () => {
        if (link.reset || link.builderGone) return;
        this.#onPath(link.builder, () => {
          const b = link.builder;
          b.proc.deliver(() => {
            if (b.link === link) b.fromServer(text);
          });
        });
      });
    });
  }

  /** A WebSocket ping from the server: the builder's transport answers. */
  pingBuilder(link: Link): void {
    if (link.rogue) {
      this.sched.after(0.4, () => {
        if (!link.reset && !link.builderGone) this.server.deliverPong(link);
      });
      return;
    }
    this.#onPath(link.builder, () => {
      const at = Math.max(this.sched.now + this.#delay(), link.lastToBuilder);
      link.lastToBuilder = at;
      this.sched.at(at, () => {
        if (link.reset || link.builderGone) return;
        const b = link.builder;
        b.proc.deliver(() => {
          if (b.link !== link) return;
          this.#onPath(b, () => {
            const back = Math.max(
              this.sched.now + this.#delay(),
              link.lastToServer,
            );
            link.lastToServer = back;
            this.sched.at(back, () => {
              if (link.reset || link.serverGone) return;
              this.#onPath(b, () => this.server.deliverPong(link));
            });
          });
        });
      });
    });
  }

  /** The server closed it: the builder hears, after what was sent. */
  closeFromServer(link: Link): void {
    if (link.rogue) {
      const rogue = link.rogue;
      this.sched.after(0.2, () => {
        if (link.builderGone) return;
        link.builderGone = true;
        rogue.onClosed();
      });
      return;
    }
    this.#onPath(link.builder, () => {
      const at = Math.max(this.sched.now + this.#delay(), link.lastToBuilder);
      this.sched.at(at, () => {
        if (link.reset) return;
        const b = link.builder;
        this.#onPath(
          b,
          () => b.proc.deliver(() => b.linkClosed(link, 1000, "")),
        );
      });
    });
  }

  /** The builder closed it: the server hears, after what was sent. */
  closeFromBuilder(link: Link): void {
    this.#onPath(link.builder, () => {
      const at = Math.max(this.sched.now + this.#delay(), link.lastToServer);
      this.sched.at(at, () => {
        if (link.reset) return;
        this.#onPath(link.builder, () => this.server.deliverClosed(link));
      });
    });
  }

  /**
   * A reset (a crash at one end, or a cut): nothing more is delivered, and
   * the other end hears it, unless a blackhole keeps even that back.
   */
  resetLink(link: Link, by: "server" | "builder" | "cut"): void {
    if (link.reset) return;
    link.reset = true;
    if (link.rogue) {
      const rogue = link.rogue;
      if (!link.builderGone) {
        link.builderGone = true;
        this.sched.after(0.2, () => rogue.onClosed());
      }
      return;
    }
    const b = link.builder;
    if (by !== "builder") {
      this.#onPath(
        b,
        () =>
          this.sched.after(
            this.#delay(),
            () => b.proc.deliver(() => b.linkClosed(link, 1006, "")),
          ),
      );
    }
    if (by !== "server") {
      this.#onPath(
        b,
        () =>
          this.sched.after(
            this.#delay(),
            () => this.server.deliverClosed(link),
          ),
      );
    }
  }

  /** Cuts builder `b`'s link; its reconnects are refused for `refuseMs`. */
  cut(b: SimBuilder, refuseMs: number): void {
    this.trace(b.name, `link cut, refused ${Math.round(refuseMs)} ms`);
    const path = this.paths[b.index]!;
    path.refuseUntil = this.sched.now + refuseMs;
    if (b.link) this.resetLink(b.link, "cut");
  }

  /** Blackholes builder `b`'s path for `ms`. */
  blackhole(b: SimBuilder, ms: number): void {
    this.trace(b.name, `link blackholed ${Math.round(ms)} ms`);
    this.paths[b.index]!.blackholed = true;
    this.sched.after(ms, () => {
      this.trace(b.name, "link heals");
      this.heal(b);
    });
  }
}

/**
 * Starts the real programs from source for black-box tests, and waits for
 * events (lines on stdout, status changes) with deadlines, never sleeps.
 *
 * @module
 */

import type { StatusDocument } from "../src/server/status_document.ts";
import { programOf, PROGRAMS } from "../src/shared/permissions.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DENO = Deno.execPath();

/**
 * `deno run` arguments that run a program from source (`"client.ts"`, or a
 * path ending so) with exactly the permissions of its compiled binary, never
 * `--allow-all`: what the binaries lack must fail here.  A stand-in for
 * someone else's program (`tests/_c_client.ts`) is not shipped, and gets
 * `--allow-all`.
 */
export function runArgs(entry: string): string[] {
  const program = programOf(entry);
  if (program === undefined) {
    if (/(^|\/)tests\/_[a-z_]+\.ts$/.test(entry)) {
      return ["run", "--allow-all", "--quiet", entry];
    }
    throw new TypeError(`Cannot run "${entry}": not one of the programs`);
  }
  return [
    "run",
    ...PROGRAMS[program].permissions,
    "--no-prompt",
    "--quiet",
    entry,
  ];
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 10_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `Timed out after ${timeoutMs} ms waiting for ${what}${
          last ? `: ${last}` : ""
        }`,
      );
    }
    // A short poll interval, bounded by the deadline above: the event here
    // is a status change we can only observe by asking.
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Collects a stream's text and lets tests wait for a line. */
export class Lines {
  text = "";
  #waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  done: Promise<void>;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        this.text += chunk;
        this.#waiters = this.#waiters.filter((w) => {
          const m = this.text.match(w.re);
          if (m) w.resolve(m);
          return !m;
        });
      }
    })();
  }

  /** Resolves with the first match of `re` in the text so far or to come. */
  async wait(re: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const m = this.text.match(re);
    if (m) return m;
    const { promise, resolve } = Promise.withResolvers<RegExpMatchArray>();
    this.#waiters.push({ re, resolve });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(`Timed out waiting for ${re} in output:\n${this.text}`),
          ),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([promise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A spawned program with its output collected. */
export class Proc {
  child: Deno.ChildProcess;
  stdout: Lines;
  stderr: Lines;

  /**
   * `args[0]` is the program's entry point (`"server.ts"`).  `detached` puts
   * it in a process group of its own (its pid), as a shell's job is, so a
   * test can signal that group the way a terminal's Ctrl-C does.
   */
  constructor(
    args: string[],
    options: { env?: Record<string, string>; detached?: boolean } = {},
  ) {
    this.child = new Deno.Command(DENO, {
      args: [...runArgs(args[0]!), ...args.slice(1)],
      cwd: ROOT,
      detached: options.detached ?? false,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      ...(options.env && { env: options.env }),
    }).spawn();
    this.stdout = new Lines(this.child.stdout);
    this.stderr = new Lines(this.child.stderr);
  }

  get pid(): number {
    return this.child.pid;
  }

  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.child.kill(signal);
    } catch {
      // Exited already.
    }
  }

  /** Waits for exit and the end of its output. */
  async finished(): Promise<{ code: number; stdout: string; stderr: string }> {
    const status = await this.child.status;
    await Promise.all([this.stdout.done, this.stderr.done]);
    return {
      code: status.code,
      stdout: this.stdout.text,
      stderr: this.stderr.text,
    };
  }

  async stop(): Promise<void> {
    this.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), 5000);
    await this.finished();
    clearTimeout(timer);
  }
}

/** A running `sai-server`. */
export class ServerProc extends Proc {
  url = "";
  port = 0;

  static async start(args: string[]): Promise<ServerProc> {
    const p = new ServerProc(["server.ts", "--listen", "127.0.0.1:0", ...args]);
    try {
      const m = await p.stdout.wait(/listening on (ws:\/\/127\.0\.0\.1:(\d+))/);
      p.url = m[1]!;
      p.port = Number(m[2]);
    } catch (err) {
      await p.stop();
      throw err;
    }
    return p;
  }

  async status(): Promise<StatusDocument> {
    const res = await fetch(`http://127.0.0.1:${this.port}/api/status`);
    return await res.json();
  }

  /** The status of one resource. */
  async resource(name: string) {
    const doc = await this.status();
    const r = doc.resources.find((x) => x.name === name);
    if (!r) throw new Error(`no resource ${name}`);
    return r;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** A running `sai-builder` with its socket in a fresh temp dir. */
export class BuilderProc extends Proc {
  socket = "";
  dir = "";

  static async start(
    server: ServerProc,
    options: {
      name?: string;
      dir?: string;
      args?: string[];
      /** Connect here instead of the server's URL (a proxy). */
      url?: string;
      /** Do not wait for the server to list the builder. */
      noWait?: boolean;
      /** Added to the environment (libfaketime's, say). */
      env?: Record<string, string>;
    } = {},
  ): Promise<BuilderProc> {
    const dir = options.dir ?? await Deno.makeTempDir({ prefix: "sai-test-" });
    const name = options.name ?? "b1";
    const p = new BuilderProc([
      "builder.ts",
      "--server",
      options.url ?? server.url,
      "--socket",
      `${dir}/${name}.sock`,
      "--name",
      name,
      ...(options.args ?? []),
    ], options.env ? { env: options.env } : {});
    p.dir = dir;
    try {
      const m = await p.stdout.wait(/SAI_BUILDER_RESOURCE_PROXY=(\S+)/);
      p.socket = m[1]!;
      if (!options.noWait) {
        await waitFor(
          "the builder to connect",
          async () =>
            (await server.status()).builders.some((b) => b.name === name),
        );
      }
    } catch (err) {
      await p.stop();
      throw err;
    }
    return p;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    // Holders are detached: make sure none outlives the test.
    await killHolders(this.dir);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** Runs `sai-resource` to completion. */
export async function runClient(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return await new Proc(["client.ts", ...args], { env }).finished();
}

/**
 * A name unique to this run, for cookies that tests look up with
 * {@linkcode holderPids}: other test runs on the machine share `pgrep`.
 */
export function uniq(name: string): string {
  return `${name}-${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * Pids of holder processes whose command line mentions `marker` (a regular
 * expression, as `pgrep -f` takes).  With `socket`, only holders started
 * with `--socket` exactly that path: the test's own builder, never another
 * run's holders with the same cookie.
 */
export async function holderPids(
  marker: string,
  options: { socket?: string } = {},
): Promise<number[]> {
  const out = await new Deno.Command("pgrep", {
    args: ["-f", "--", `--holder.*${marker}`],
    stdout: "piped",
    stderr: "null",
  }).output();
  const pids = new TextDecoder().decode(out.stdout).split("\n").filter(
    Boolean,
  ).map(Number);
  const { socket } = options;
  if (socket === undefined) return pids;
  const mine: number[] = [];
  for (const pid of pids) {
    let argv: string[];
    try {
      argv = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
    } catch {
      continue; // Exited since pgrep saw it.
    }
    const at = argv.indexOf("--socket");
    if (at >= 0 && argv[at + 1] === socket) mine.push(pid);
  }
  return mine;
}

/** SIGKILLs any holder whose command line mentions `marker`. */
export async function killHolders(marker: string): Promise<void> {
  for (const pid of await holderPids(marker)) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Gone.
    }
  }
}

/** A raw Unix-socket client, speaking bytes exactly as given. */
export class RawClient {
  conn: Deno.UnixConn;
  #text = "";
  #closed = false;
  #reading: Promise<void>;
  #wake: (() => void) | undefined;

  private constructor(conn: Deno.UnixConn) {
    this.conn = conn;
    this.#reading = (async () => {
      const buf = new Uint8Array(65536);
      const dec = new TextDecoder();
      try {
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) break;
          this.#text += dec.decode(buf.subarray(0, n), { stream: true });
          this.#wake?.();
        }
      } catch {
        // Reset or closed by us.
      }
      this.#closed = true;
      this.#wake?.();
    })();
  }

  static async connect(path: string): Promise<RawClient> {
    return new RawClient(await Deno.connect({ transport: "unix", path }));
  }

  async send(text: string | Uint8Array): Promise<void> {
    const bytes = typeof text === "string"
      ? new TextEncoder().encode(text)
      : text;
    let at = 0;
    while (at < bytes.length) at += await this.conn.write(bytes.subarray(at));
  }

  get text(): string {
    return this.#text;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Waits until the received text matches, or the peer closes. */
  async until(
    done: (text: string, closed: boolean) => boolean,
    timeoutMs = 10_000,
  ): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!done(this.#text, this.#closed)) {
      if (this.#closed) {
        throw new Error(`Connection closed; received: ${this.#text}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Timed out; received: ${this.#text}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    return this.#text;
  }

  /** Waits for the peer to close the connection. */
  async closedByPeer(timeoutMs = 10_000): Promise<string> {
    return await this.until((_, closed) => closed, timeoutMs).catch((err) => {
      if (this.#closed) return this.#text;
      throw err;
    });
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Closed already.
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.#reading;
  }
}

/** The C sai-resource's exact request bytes: one object, no newline. */
export function cRequest(
  resname: string,
  cookie: string,
  amount: number,
  lease: number,
): string {
  return `{"schema":"com-warmcat-sai-resource","resname":"${resname}","cookie":"${cookie}","amount":${amount},"lease":${lease}}`;
}

/** A raw builder connection to the server, speaking the WebSocket protocol. */
export class RawBuilder {
  ws: WebSocket;
  messages: Record<string, unknown>[] = [];
  closed: Promise<CloseEvent>;
  #wake: (() => void) | undefined;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    this.closed = new Promise((resolve) => {
      ws.onclose = (ev) => {
        resolve(ev);
        this.#wake?.();
      };
    });
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") this.messages.push(JSON.parse(ev.data));
      this.#wake?.();
    };
  }

  /** Connects and, unless `hello` is false, says hello. */
  static async connect(
    url: string,
    hello: false | { name: string; session?: string; token?: string },
  ): Promise<RawBuilder> {
    const ws = new WebSocket(url);
    const b = new RawBuilder(ws);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    if (hello) b.send({ hello });
    return b;
  }

  send(msg: Record<string, unknown> | string): void {
    this.ws.send(
      typeof msg === "string"
        ? msg
        : JSON.stringify({ schema: "com-warmcat-sai-resource", ...msg }),
    );
  }

  /** Waits for a message matching `pred`. */
  async next(
    pred: (m: Record<string, unknown>) => boolean,
    timeoutMs = 10_000,
  ): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.messages.find(pred);
      if (m) return m;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`Timed out; received ${JSON.stringify(this.messages)}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.close();
    await this.closed;
  }
}

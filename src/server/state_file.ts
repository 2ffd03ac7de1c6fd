/**
 * The server's stable storage, as NFS servers keep it for locks: whether
 * leases may be outstanding in builders from an earlier run, and which
 * builder sessions may hold them.  A start after a crash finds it dirty and
 * holds back new grants for the reclaim grace; a first start (no file) or a
 * clean restart with nothing held needs none.
 *
 * Written rarely: at start (dirty; a failure stops the start), at each new
 * builder session's first hello (retried until it succeeds: the builder is
 * welcomed only then), when a reclaim grace ends, when a budget is set or
 * cleared through the admin API, and at a clean shutdown.
 * Sessions are stored as SHA-256 digests: they are secrets.  It fails
 * closed: a file that cannot be read or trusted means any builder may hold
 * leases.  It also keeps the budgets set through the admin API, which
 * outlive a restart.
 *
 * @module
 */

import { NAME_PATTERN } from "../protocol/protocol.ts";
import { MAX_BUDGET } from "./budgets.ts";

/**
 * What the state file records.  Version 2 added `overrides`; a version 1
 * file (none) is still read.
 */
export interface ServerState {
  version: 2;
  /** A clean shutdown with nothing held: no reclaim grace needed. */
  clean: boolean;
  /** The fence (seconds) this server announced to its builders. */
  fence: number;
  /** SHA-256 (hex) of every builder session that may hold leases. */
  builders: string[];
  /**
   * Budgets set through the admin API, which win over the config's until
   * cleared through it (see budget_overrides.ts): by resource name, a
   * budget, or null for a resource removed through the API.
   */
  overrides: Record<string, number | null>;
}

/**
 * A digest that no session has: recorded for a builder that said hello
 * without a session, which can never be known to have restored.
 */
export const ANONYMOUS = "anonymous";

/** The state file's format, as written. */
export const STATE_VERSION = 2;

/** The SHA-256 digest (hex) of a builder session. */
export async function sessionDigest(session: string): Promise<string> {
  const d = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(session),
  );
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/**
 * The default state file for a listen address: none for port 0 (no
 * builder can know the address of an earlier run), else under
 * `$STATE_DIRECTORY`, `$XDG_STATE_HOME` or `~/.local/state`.
 */
export function defaultStatePath(
  hostname: string,
  port: number,
): string | undefined {
  if (port === 0) return undefined;
  const env = (name: string) => {
    try {
      return Deno.env.get(name) || undefined;
    } catch {
      return undefined;
    }
  };
  const base = env("STATE_DIRECTORY") ?? env("XDG_STATE_HOME") ??
    (env("HOME") && `${env("HOME")}/.local/state`);
  if (base === undefined) return undefined;
  const host = hostname.replace(/[^A-Za-z0-9_.-]/g, "_");
  return `${base}/sai-server/${host}_${port}.json`;
}

/** Most bytes a state file may have: a longer one is not read, but distrusted. */
export const MAX_STATE_BYTES = 1 << 20;

/** What a start finds in its state file. */
export type StoredState =
  /** No file: a first start. */
  | { kind: "none" }
  | { kind: "state"; state: ServerState }
  /**
   * A file that cannot be read or parsed, is too long or wrongly shaped:
   * any builder may hold leases from an earlier run.
   */
  | { kind: "unknown"; reason: string };

const DIGEST = /^[0-9a-f]{64}$/;

/**
 * Reads a state file, at most {@linkcode MAX_STATE_BYTES} of it.  Throws
 * `TypeError` if the path names something other than a regular file (a
 * device, a FIFO, a directory): a wrong `--state-file`, not a crash; and
 * throws if it cannot even be looked at.
 */
export async function readState(path: string): Promise<StoredState> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { kind: "none" };
    // Deno lets only --allow-all open devices and /proc or /sys files.
    if (err instanceof Deno.errors.NotCapable) {
      throw new TypeError(
        "it is a special file (a device, or under /proc or /sys), not a regular file",
      );
    }
    // The write at start would fail too: say why now.
    throw new Error(`cannot stat it: ${(err as Error).message}`);
  }
  if (!info.isFile) throw notAFile(info);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    return unknown(`cannot open it: ${(err as Error).message}`);
  }
  let text: string;
  try {
    let opened: Deno.FileInfo;
    let bytes: Uint8Array;
    try {
      opened = await file.stat();
      // Swapped since the stat: still never read an endless device.
      if (opened.isFile) bytes = await readAtMost(file, MAX_STATE_BYTES + 1);
      else bytes = new Uint8Array();
    } catch (err) {
      return unknown(`cannot read it: ${(err as Error).message}`);
    }
    if (!opened.isFile) throw notAFile(opened);
    if (bytes.length > MAX_STATE_BYTES) {
      return unknown(`it is longer than ${MAX_STATE_BYTES} bytes`);
    }
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      return unknown("it is not UTF-8 text");
    }
  } finally {
    file.close();
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return unknown(text.trim() === "" ? "it is empty" : "it is not JSON");
  }
  const state = asServerState(value);
  return state === undefined
    ? unknown(`it is not a version 1 or ${STATE_VERSION} state file`)
    : { kind: "state", state };
}

/** Reads until the end of `file` or `limit` bytes, whichever comes first. */
async function readAtMost(
  file: Deno.FsFile,
  limit: number,
): Promise<Uint8Array> {
  const buf = new Uint8Array(limit);
  let at = 0;
  while (at < limit) {
    const n = await file.read(buf.subarray(at));
    if (n === null) break;
    at += n;
  }
  return buf.subarray(0, at);
}

function unknown(reason: string): StoredState {
  return { kind: "unknown", reason };
}

function notAFile(info: Deno.FileInfo): TypeError {
  const what = info.isDirectory
    ? "a directory"
    : info.isCharDevice
    ? "a character device"
    : info.isBlockDevice
    ? "a block device"
    : info.isFifo
    ? "a FIFO"
    : info.isSocket
    ? "a socket"
    : "something else";
  return new TypeError(`it is ${what}, not a regular file`);
}

/**
 * The state as written by {@linkcode StateWriter} (version 2, or version 1
 * before overrides), or undefined: anything else (a field missing or of
 * another type, a clean state that names builders, an override that is not
 * a budget) is not trusted to mean what it seems to.
 */
function asServerState(v: unknown): ServerState | undefined {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return;
  const o = v as Record<string, unknown>;
  if (o.version !== 1 && o.version !== STATE_VERSION) return;
  if (typeof o.clean !== "boolean") return;
  const overrides = o.version === 1 ? {} : asOverrides(o.overrides);
  if (overrides === undefined) return;
  const fence = o.fence;
  if (typeof fence !== "number" || !Number.isFinite(fence) || fence < 0) {
    return;
  }
  const builders = o.builders;
  if (!Array.isArray(builders)) return;
  if (
    !builders.every((b) =>
      typeof b === "string" && (b === ANONYMOUS || DIGEST.test(b))
    )
  ) return;
  if (o.clean && builders.length > 0) return;
  return { version: STATE_VERSION, clean: o.clean, fence, builders, overrides };
}

/**
 * Overrides as written, or undefined: names and budgets as the API takes
 * them.  Built by `fromEntries`, so that a resource named `__proto__` is an
 * own property, a name like any other.
 */
function asOverrides(
  v: unknown,
): Record<string, number | null> | undefined {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return;
  const entries = Object.entries(v);
  for (const [name, budget] of entries) {
    if (!NAME_PATTERN.test(name)) return;
    if (
      budget !== null &&
      !(Number.isSafeInteger(budget) && budget >= 0 && budget <= MAX_BUDGET)
    ) return;
  }
  return Object.fromEntries(entries);
}

/** Options for {@linkcode StateWriter}. */
export interface StateWriterOptions {
  /** The state to write, taken anew before each attempt of a retried write. */
  snapshot: () => ServerState;
  /** A retried write succeeded, after `failures` failed attempts. */
  onWritten: (state: ServerState, failures: number) => void;
  /** An attempt failed (the `failures`th in a row); it is retried. */
  onFailed: (err: unknown, failures: number) => void;
  /** Between attempts, in ms (default 1000). */
  retryMs?: number;
}

/**
 * Writes state files one at a time, each atomically and durably: once and
 * now ({@linkcode StateWriter.writeOnce}), or retried until one attempt
 * succeeds ({@linkcode StateWriter.schedule}), each attempt writing the
 * latest snapshot.
 */
export class StateWriter {
  #path: string;
  #opts: StateWriterOptions;
  #chain: Promise<void> = Promise.resolve();
  /** A snapshot is to be written. */
  #dirty = false;
  #draining = false;
  #closed = false;
  #failures = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #wake: (() => void) | undefined;

  constructor(path: string, options: StateWriterOptions) {
    this.#path = path;
    this.#opts = options;
  }

  get path(): string {
    return this.#path;
  }

  /** Resolves once `state` is on disk (after any earlier write). */
  writeOnce(state: ServerState): Promise<void> {
    const next = this.#chain.then(() => this.#write(state));
    this.#chain = next.catch(() => {});
    return next;
  }

  /**
   * Writes the current snapshot soon, and again after each failure (about
   * once a second) until an attempt succeeds.
   */
  schedule(): void {
    this.#dirty = true;
    if (this.#draining || this.#closed) return;
    this.#draining = true;
    this.#drain();
  }

  /** No more retries; a write in progress completes. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#wake?.();
  }

  async #drain(): Promise<void> {
    try {
      while (this.#dirty && !this.#closed) {
        this.#dirty = false;
        const state = this.#opts.snapshot();
        try {
          await this.writeOnce(state);
        } catch (err) {
          if (this.#closed) return;
          this.#dirty = true;
          this.#opts.onFailed(err, ++this.#failures);
          await new Promise<void>((resolve) => {
            this.#wake = resolve;
            this.#timer = setTimeout(resolve, this.#opts.retryMs ?? 1000);
          });
          continue;
        }
        const failures = this.#failures;
        this.#failures = 0;
        this.#opts.onWritten(state, failures);
      }
    } finally {
      this.#draining = false;
    }
  }

  async #write(state: ServerState): Promise<void> {
    const dir = this.#path.slice(0, Math.max(1, this.#path.lastIndexOf("/")));
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.#path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
    const file = await Deno.open(tmp, {
      write: true,
      create: true,
      truncate: true,
      mode: 0o600,
    });
    try {
      try {
        const bytes = new TextEncoder().encode(JSON.stringify(state) + "\n");
        let at = 0;
        while (at < bytes.length) at += await file.write(bytes.subarray(at));
        await file.sync();
      } finally {
        file.close();
      }
      await Deno.rename(tmp, this.#path);
    } catch (err) {
      // Retried every second on a full disk: leave no file per attempt.
      await Deno.remove(tmp).catch(() => {});
      throw err;
    }
  }
}

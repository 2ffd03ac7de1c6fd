/**
 * The state file's I/O: the bounded, regular-file-only read at start and
 * the atomic, durable writes.  What it holds, and how its content is judged,
 * is the core's (`core/state.ts`); so is when to write, and when to retry a
 * write that failed.
 *
 * @module
 */

import {
  formatState,
  MAX_STATE_BYTES,
  parseState,
  type ServerState,
  type StoredState,
  unknown,
} from "./core/state.ts";

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
  let bytes: Uint8Array;
  try {
    let opened: Deno.FileInfo;
    try {
      opened = await file.stat();
      // Swapped since the stat: still never read an endless device.
      if (opened.isFile) bytes = await readAtMost(file, MAX_STATE_BYTES + 1);
      else bytes = new Uint8Array();
    } catch (err) {
      return unknown(`cannot read it: ${(err as Error).message}`);
    }
    if (!opened.isFile) throw notAFile(opened);
  } finally {
    file.close();
  }
  return parseState(bytes);
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
 * Writes state files one at a time, in the order asked, each atomically
 * (a temporary file renamed over it) and durably (synced first).  When to
 * write, and whether to retry a failure, is the core's decision.
 */
export class StateWriter {
  #path: string;
  #chain: Promise<void> = Promise.resolve();

  constructor(path: string) {
    this.#path = path;
  }

  get path(): string {
    return this.#path;
  }

  /** Resolves once `state` is on disk (after any earlier write). */
  write(state: ServerState): Promise<void> {
    const next = this.#chain.then(() => this.#write(state));
    this.#chain = next.catch(() => {});
    return next;
  }

  /** Resolves once every write asked for so far has ended. */
  idle(): Promise<void> {
    return this.#chain;
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
        const bytes = new TextEncoder().encode(formatState(state));
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

/**
 * The server's stable storage, as NFS servers keep it for locks: whether
 * leases may be outstanding in builders from an earlier run, and which
 * builder sessions may hold them.  A start after a crash finds it dirty and
 * holds back new grants for the reclaim grace; a first start (no file) or a
 * clean restart with nothing held needs none.
 *
 * Written rarely: at start (dirty), at each new builder session's first
 * hello, and at a clean shutdown.  Sessions are stored as SHA-256 digests:
 * they are secrets.
 *
 * @module
 */

/** What the state file records. */
export interface ServerState {
  version: 1;
  /** A clean shutdown with nothing held: no reclaim grace needed. */
  clean: boolean;
  /** The fence (seconds) this server announced to its builders. */
  fence: number;
  /** SHA-256 (hex) of every builder session that may hold leases. */
  builders: string[];
}

/**
 * A digest that no session has: recorded for a builder that said hello
 * without a session, which can never be known to have restored.
 */
export const ANONYMOUS = "anonymous";

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

/** Reads a state file; undefined if there is none. */
export async function readState(
  path: string,
): Promise<ServerState | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  try {
    const v = JSON.parse(text);
    return {
      version: 1,
      clean: v?.clean === true,
      fence: typeof v?.fence === "number" && v.fence > 0 ? v.fence : 0,
      builders: Array.isArray(v?.builders)
        ? v.builders.filter((b: unknown) => typeof b === "string")
        : [],
    };
  } catch {
    // Unreadable: assume the worst, a crash with unknown builders.
    return { version: 1, clean: false, fence: 0, builders: [ANONYMOUS] };
  }
}

/** Writes state files one at a time, each atomically and durably. */
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
      const bytes = new TextEncoder().encode(JSON.stringify(state) + "\n");
      let at = 0;
      while (at < bytes.length) at += await file.write(bytes.subarray(at));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, this.#path);
  }
}

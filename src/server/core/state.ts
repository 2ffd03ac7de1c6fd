/**
 * The server's stable storage, as NFS servers keep it for locks: whether
 * leases may be outstanding in builders from an earlier run, and which
 * builder sessions may hold them.  A start after a crash finds it dirty and
 * holds back new grants for the reclaim grace; a first start (no file) or a
 * clean restart with nothing held needs none.
 *
 * What the file holds and how its bytes are judged, without I/O: the shell
 * (`../state_file.ts`) reads and writes it.  Sessions are stored as SHA-256
 * digests: they are secrets.  It fails closed: a file that cannot be parsed
 * or trusted means any builder may hold leases.  It also keeps the budgets
 * set through the admin API, which outlive a restart.
 *
 * @module
 */

import { NAME_PATTERN } from "../../protocol/protocol.ts";
import { MAX_BUDGET } from "./budget_sources.ts";

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
   * cleared through it (see budget_sources.ts): by resource name, a
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

/** The state file's content for `state`, as the shell writes it. */
export function formatState(state: ServerState): string {
  return JSON.stringify(state) + "\n";
}

/**
 * Judges a state file's content: its bytes as read (at most
 * {@linkcode MAX_STATE_BYTES} and one more, to tell a longer file), or its
 * text.  Anything but a state as written is "unknown", with why.
 */
export function parseState(content: Uint8Array | string): StoredState {
  let text: string;
  if (typeof content === "string") text = content;
  else {
    if (content.length > MAX_STATE_BYTES) {
      return unknown(`it is longer than ${MAX_STATE_BYTES} bytes`);
    }
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(content);
    } catch {
      return unknown("it is not UTF-8 text");
    }
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

/** An untrusted state file, and why. */
export function unknown(reason: string): StoredState {
  return { kind: "unknown", reason };
}

/**
 * The state as written (version 2, or version 1 before overrides), or
 * undefined: anything else (a field missing or of another type, a clean
 * state that names builders, an override that is not a budget) is not
 * trusted to mean what it seems to.
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

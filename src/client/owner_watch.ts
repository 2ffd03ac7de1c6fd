/**
 * The process a holder keeps its lease for (its **owner**), and noticing
 * when that process is gone.
 *
 * A holder is detached (its own session) so that ctest does not wait for
 * it; but then a CI cancel that kills the job's process group never reaches
 * it, and the lease would outlive the job until its own end.  So the holder
 * watches its owner and gives the lease back as soon as the owner is gone.
 *
 * Which process: `--owner-pid PID`, else the nearest ancestor named `ctest`
 * (a fixture's setup test is started by ctest, maybe through a shell), else
 * the parent of `sai-resource`.  A PID alone can be reused, so an owner is
 * a PID **and** its start time (field 22 of `/proc/PID/stat`).  Linux only:
 * without `/proc`, or when the process lives in another PID namespace (the
 * parent PID reads 0), there is nothing to watch and the caller is told why.
 *
 * Deno offers no pidfd, so the watch polls `/proc/PID/stat` (one small
 * read every 250 ms by default).
 *
 * @module
 */

/** What `/proc/PID/stat` says about a process (the fields we use). */
export interface ProcStat {
  pid: number;
  /** The command name (`comm`), at most 15 bytes on Linux. */
  name: string;
  /** `R`, `S`, `D`, `Z` (zombie: dead, not yet reaped), `X`, … */
  state: string;
  ppid: number;
  /** Start time after boot, in clock ticks: tells a reused PID apart. */
  start: number;
}

/** A process to watch: a PID and when that process started. */
export interface Owner {
  pid: number;
  name: string;
  start: number;
}

/** How the owner was chosen. */
export type OwnerChoice =
  | { kind: "watch"; owner: Owner; how: "given" | "ctest" | "parent" }
  | {
    kind: "none";
    /** Why nothing is watched; undefined when asked (`--no-owner`). */
    reason?: string;
  };

/**
 * Parses the text of `/proc/PID/stat`.  The name is in parentheses and may
 * itself contain spaces and parentheses, so the fields after it are found
 * from the **last** `)`.
 */
export function parseProcStat(text: string): ProcStat {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) {
    throw new SyntaxError(`Cannot parse /proc stat: "${text.slice(0, 60)}"`);
  }
  const pid = Number(text.slice(0, open).trim());
  // After ")": state(3) ppid(4) pgrp(5) … starttime(22); index 0 is state.
  const rest = text.slice(close + 2).split(" ");
  const state = rest[0] ?? "";
  const ppid = Number(rest[1]);
  const start = Number(rest[19]);
  if (
    !Number.isInteger(pid) || !Number.isInteger(ppid) ||
    !Number.isInteger(start) || state === ""
  ) {
    throw new SyntaxError(`Cannot parse /proc stat: "${text.slice(0, 60)}"`);
  }
  return { pid, name: text.slice(open + 1, close), state, ppid, start };
}

/** Where `/proc` is; tests point it elsewhere. */
export interface ProcOptions {
  procRoot?: string;
}

/** Reads `/proc/PID/stat`; undefined when there is no such process to see. */
export function readProcStat(
  pid: number,
  options: ProcOptions = {},
): ProcStat | undefined {
  if (!Number.isInteger(pid) || pid < 1) return undefined;
  let text: string;
  try {
    text = Deno.readTextFileSync(`${options.procRoot ?? "/proc"}/${pid}/stat`);
  } catch {
    return undefined;
  }
  try {
    return parseProcStat(text);
  } catch {
    return undefined;
  }
}

/** Whether `owner` still runs: same PID, same start time, not a zombie. */
export function ownerAlive(owner: Owner, options: ProcOptions = {}): boolean {
  const stat = readProcStat(owner.pid, options);
  return stat !== undefined && stat.start === owner.start &&
    stat.state !== "Z" && stat.state !== "X";
}

/** A process name as the protocol carries it: printable ASCII only. */
function printable(name: string): string {
  return name.replace(/[^ -~]/g, "?").slice(0, 64) || "?";
}

function ownerOf(stat: ProcStat): Owner {
  return { pid: stat.pid, name: printable(stat.name), start: stat.start };
}

/** Options for {@linkcode chooseOwner}. */
export interface ChooseOwnerOptions extends ProcOptions {
  /** `--owner-pid`. */
  ownerPid?: number;
  /** `--no-owner`. */
  noOwner?: boolean;
  /** Our parent's PID (`Deno.ppid`); 0 when it is in another namespace. */
  parent: number;
}

/**
 * Picks the owner: `--owner-pid`, else the nearest `ctest` ancestor, else
 * the parent.  Says why when there is none to watch.
 */
export function chooseOwner(options: ChooseOwnerOptions): OwnerChoice {
  if (options.noOwner) return { kind: "none" };
  if (options.ownerPid !== undefined) {
    const stat = readProcStat(options.ownerPid, options);
    if (!stat) {
      return {
        kind: "none",
        reason:
          `cannot see process ${options.ownerPid} (--owner-pid): not running, in another PID namespace, or no /proc`,
      };
    }
    return { kind: "watch", owner: ownerOf(stat), how: "given" };
  }
  const parent = readProcStat(options.parent, options);
  if (!parent) {
    return {
      kind: "none",
      reason: options.parent < 1
        ? "cannot see the parent process (it is in another PID namespace)"
        : `cannot see the parent process ${options.parent} (no /proc, or no permission to read it: Deno needs --allow-all for /proc)`,
    };
  }
  const ctest = ctestAbove(parent, options);
  return ctest
    ? { kind: "watch", owner: ctest, how: "ctest" }
    : { kind: "watch", owner: ownerOf(parent), how: "parent" };
}

/**
 * The nearest process named `ctest` from `parent` (our parent's PID) up,
 * if any.  Ask early: once the shell that started us exits, we are
 * re-parented and the way up to ctest is lost.
 */
export function ctestAncestor(
  parent: number,
  options: ProcOptions = {},
): Owner | undefined {
  const stat = readProcStat(parent, options);
  return stat && ctestAbove(stat, options);
}

function ctestAbove(
  from: ProcStat,
  options: ProcOptions,
): Owner | undefined {
  // A loop guard for a /proc in flux.
  let at: ProcStat | undefined = from;
  for (let hops = 0; at && hops < 64; hops++) {
    if (at.name === "ctest") return ownerOf(at);
    if (at.ppid < 2) return undefined;
    at = readProcStat(at.ppid, options);
  }
  return undefined;
}

/**
 * The owner a holder was told to follow (`--owner-pid` and the start time
 * its parent saw).  If the process is no longer the one the parent saw, the
 * owner is gone already and the first look says so.
 */
export function ownerFor(
  pid: number,
  start: number | undefined,
  options: ProcOptions = {},
): Owner {
  const stat = readProcStat(pid, options);
  return {
    pid,
    name: stat ? printable(stat.name) : "?",
    start: start ?? stat?.start ?? -1,
  };
}

/** Default pause between two looks at the owner, in ms. */
export const DEFAULT_WATCH_INTERVAL_MS = 250;

/**
 * Calls `onGone` once, soon after `owner` is gone (within `intervalMs`).
 * Returns a function that stops watching.
 */
export function watchOwner(
  owner: Owner,
  onGone: () => void,
  options: ProcOptions & { intervalMs?: number } = {},
): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const look = () => {
    if (!ownerAlive(owner, options)) {
      timer = undefined;
      onGone();
      return;
    }
    timer = setTimeout(look, options.intervalMs ?? DEFAULT_WATCH_INTERVAL_MS);
  };
  timer = setTimeout(look, 0);
  return () => clearTimeout(timer);
}

/** `ctest (pid 123)`, for messages. */
export function describeOwner(owner: Owner): string {
  return `${owner.name} (pid ${owner.pid})`;
}

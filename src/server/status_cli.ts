/**
 * `sai-server status`: the status page's view as aligned text tables, from
 * a running server's `/api/status`.
 *
 * @module
 */

import { usageError } from "../shared/help.ts";
import { parseFlags, wantsHelp } from "../shared/cli_flags.ts";
import { formatDuration, formatStart } from "../shared/format.ts";
import type { StatusDocument } from "./status_document.ts";

export { formatDuration };

/** Usage of `sai-server status`. */
export const STATUS_USAGE =
  "usage: sai-server status [--server URL] [--json]   (URL default http://127.0.0.1:4460)";

/** Lays out rows in columns; `right` columns are right-aligned. */
export function alignTable(
  head: string[],
  rows: string[][],
  right: Set<number> = new Set(),
): string {
  const widths = head.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length))
  );
  const line = (cells: string[]) =>
    cells.map((c, i) =>
      right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)
    ).join("  ").trimEnd();
  return [line(head), ...rows.map(line)].join("\n");
}

/** Renders a status document as text, as of its own `time`. */
export function renderStatus(doc: StatusDocument): string {
  const now = doc.time;
  const out: string[] = [];
  out.push(
    alignTable(
      [
        "RESOURCE",
        "ALLOCATED",
        "BUDGET",
        "USE",
        "QUEUED",
        "QUEUED AMOUNT",
        "PEAK",
      ],
      doc.resources.map((r) => [
        r.name,
        String(r.allocated),
        String(r.budget),
        r.budget > 0 ? `${Math.round((r.allocated / r.budget) * 100)} %` : "-",
        String(r.queuedRequests),
        String(r.queuedAmount),
        String(r.peak),
      ]),
      new Set([1, 2, 3, 4, 5, 6]),
    ),
  );
  const leases = doc.resources.flatMap((r) =>
    r.leases.map((l) => [
      r.name,
      l.builder || l.owner,
      l.cookie,
      String(l.amount),
      formatDuration(now - l.grantedAt),
      formatDuration(l.expires - now),
      l.process ? `${l.process.name}[${l.process.pid}]` : "-",
    ])
  );
  out.push("", "LEASES");
  out.push(
    leases.length === 0 ? "(none)" : alignTable(
      [
        "RESOURCE",
        "BUILDER",
        "COOKIE",
        "AMOUNT",
        "HELD FOR",
        "EXPIRES IN",
        "FOR PROCESS",
      ],
      leases,
      new Set([3, 4, 5]),
    ),
  );
  const queue = doc.resources.flatMap((r) =>
    r.queue.map((q) => [
      r.name,
      String(q.position),
      q.builder || q.owner,
      q.cookie,
      String(q.amount),
      formatDuration(now - q.enqueuedAt),
      formatStart(q.estimatedStart, now),
    ])
  );
  out.push("", "QUEUE");
  out.push(
    queue.length === 0 ? "(none)" : alignTable(
      [
        "RESOURCE",
        "#",
        "BUILDER",
        "COOKIE",
        "AMOUNT",
        "WAITING FOR",
        "EST. START",
      ],
      queue,
      new Set([1, 4, 5, 6]),
    ),
  );
  const s = doc.stats;
  const refused = Object.values(s.refusals).reduce((a, b) => a + (b ?? 0), 0);
  out.push(
    "",
    `${doc.builders.length} builder(s) connected; since start: ${s.grants} granted, ${refused} refused, ${s.expiries} expired, ${s.releases} released`,
  );
  return out.join("\n") + "\n";
}

/** `ws://h:p` or `http://h:p` (or `h:p`) to the status URL. */
export function statusUrl(server: string): URL {
  let base = server.replace(/^ws(s?):\/\//, "http$1://");
  if (!/^https?:\/\//.test(base)) base = `http://${base}`;
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new TypeError(`--server must be a URL, got "${server}"`);
  }
  return new URL("/api/status", url);
}

/** How many seconds `sai-server status` waits for the server. */
const STATUS_TIMEOUT_SECONDS = 10;

/**
 * Why a fetch failed, in words: `fetch()` itself says only "fetch failed"
 * and keeps the reason in `cause`.
 */
export function fetchFailure(err: unknown): string {
  const e = err as Error;
  if (e.name === "TimeoutError") {
    return `no answer within ${STATUS_TIMEOUT_SECONDS} s`;
  }
  const cause = e.cause instanceof Error ? e.cause.message : e.message;
  // "error sending request for url (U): client error (Connect): tcp ...".
  const detail = cause.replace(
    /^error sending request for url \([^)]*\): /,
    "",
  );
  if (/connection refused/i.test(detail)) {
    return "connection refused (is sai-server running, listening there?)";
  }
  if (/dns error/i.test(detail)) {
    return `cannot resolve the host name (${detail})`;
  }
  if (
    /certificate|tls|handshake|corrupt message|InvalidContentType/i.test(detail)
  ) {
    return `TLS failed (${detail}); use http:// for a server without --cert`;
  }
  return detail;
}

/** Runs `sai-server status`: writes to `out`, returns the exit code. */
export async function runStatus(
  args: string[],
  io: { out: (text: string) => void; err: (text: string) => void },
): Promise<number> {
  const options = {
    server: { type: "string", default: "http://127.0.0.1:4460" },
    json: { type: "boolean", default: false },
  } as const;
  if (wantsHelp(args, options)) {
    io.out(`${STATUS_USAGE}\n`);
    return 0;
  }
  let values;
  try {
    ({ values } = parseFlags({
      args,
      strict: true,
      allowPositionals: false,
      options,
    }));
  } catch (err) {
    io.err(`${usageError("sai-server status", (err as Error).message)}\n`);
    return 2;
  }
  let url: URL;
  try {
    url = statusUrl(values.server);
  } catch (err) {
    io.err(`${usageError("sai-server status", (err as Error).message)}\n`);
    return 2;
  }
  let doc: StatusDocument;
  try {
    const res = await fetch(url, {
      signal: AbortSignal.timeout(STATUS_TIMEOUT_SECONDS * 1000),
    });
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`HTTP ${res.status}`);
    }
    doc = await res.json();
    if (doc.version !== 1) throw new Error(`unknown version ${doc.version}`);
  } catch (err) {
    io.err(
      `sai-server status: cannot get "${url}": ${fetchFailure(err)}\n`,
    );
    return 1;
  }
  io.out(values.json ? JSON.stringify(doc, null, 2) + "\n" : renderStatus(doc));
  return 0;
}

/**
 * What `sai-resource` says about its builder's link to the server: the
 * line it prints while waiting, the cause it gives a timeout, and the
 * answer to `--check`.
 *
 * @module
 */

import type { LinkState } from "../protocol/protocol.ts";
import { formatDuration } from "../shared/format.ts";
import { wallClock } from "../shared/clock.ts";

/** `2025-06-01 12:00:03 UTC`. */
function at(epochMs: number): string {
  return new Date(epochMs).toISOString().replace("T", " ").replace(
    /\.\d+Z$/,
    " UTC",
  );
}

/** `since 2025-06-01 12:00:03 UTC (2 min 5 s)`, as of `now` (epoch ms). */
function since(link: LinkState, now: number): string {
  return `since ${at(link.since)} (${formatDuration(now - link.since)})`;
}

/** The line printed while waiting when the builder tells its link's state. */
export function linkLine(link: LinkState, now: number = wallClock()): string {
  if (link.up) {
    return `the builder is linked to the server ${link.server} again; still waiting`;
  }
  return `the builder has no link to the server ${link.server} ${
    since(link, now)
  }: ${
    link.error ?? "not connected yet"
  }; still waiting (the server may come back)`;
}

/**
 * What a timeout adds when the link was down at its end: for the whole
 * wait (`whole`), or since some time during it.
 */
export function linkTimeoutCause(
  link: LinkState,
  options: { whole: boolean; now?: number },
): string {
  const error = link.error ? `; last error: ${link.error}` : "";
  return options.whole
    ? `the builder had no link to the server for the whole wait (${link.server}, down ${
      since(link, options.now ?? wallClock())
    }${error})`
    : `the builder has had no link to the server ${link.server} ${
      since(link, options.now ?? wallClock())
    }${error}`;
}

/** `--check`'s report: the builder's name, the server and the link. */
export function checkLines(
  builder: string,
  link: LinkState,
  now: number = wallClock(),
): string[] {
  return [
    `builder: ${builder}`,
    `server: ${link.server}`,
    link.up
      ? `link: up ${since(link, now)}`
      : `link: down ${since(link, now)}: ${
        link.error ?? "not connected yet (the first attempt is under way)"
      }`,
  ];
}

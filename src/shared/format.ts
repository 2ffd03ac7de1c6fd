/**
 * Formatting shared by the status page (bundled into the browser) and
 * `sai-server status`, so both say the same thing.  No `Deno.*` here.
 *
 * @module
 */

/** `75 s`, `4 min 10 s`, `2 h 5 min`, `3 d 4 h`; negative counts as 0. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** When a queued request may start: `now`, `in 2 min 5 s` or `unknown`. */
export function formatStart(
  estimatedStart: number | null,
  now: number,
): string {
  if (estimatedStart === null) return "unknown";
  if (estimatedStart <= now) return "now";
  return `in ${formatDuration(estimatedStart - now)}`;
}

/**
 * What every form of `sai-resource` shares: its exit codes and how it
 * writes to stderr.
 *
 * @module
 */

/** Exit codes. */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export const encoder = new TextEncoder();

/** Writes `sai-resource: LINE` to stderr. */
export function printErr(line: string): void {
  Deno.stderr.writeSync(encoder.encode(`sai-resource: ${line}\n`));
}

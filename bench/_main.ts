// deno-lint-ignore-file no-console -- prints a benchmark's usage and errors
/**
 * Runs a benchmark's `main()`: `--help` prints its usage, and a flag the
 * benchmark does not know, or a bad value for one, is a one-line error
 * with the usage (exit 2) instead of a stack trace.
 *
 * @module
 */

/** Runs `main(Deno.args)` with `usage` for `--help` and bad flags. */
export async function runBench(
  main: (args: string[]) => unknown,
  usage: string,
): Promise<void> {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(usage);
    return;
  }
  try {
    await main(Deno.args);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const badFlag = typeof code === "string" &&
      code.startsWith("ERR_PARSE_ARGS");
    if (!badFlag && !(err instanceof RangeError)) throw err;
    console.error(`error: ${(err as Error).message}\n${usage}`);
    Deno.exit(2);
  }
}

/**
 * `sai-resource`: the CLI that ctest runs to take a lease.
 *
 * @module
 */

import { runClient } from "./src/client/client_cli.ts";

/** Runs `sai-resource` and exits with its code. */
export async function main(args: string[]): Promise<void> {
  Deno.exit(await runClient(args));
}

if (import.meta.main) await main(Deno.args);

/**
 * `sai-resource`: ask the builder for a lease and block until it is granted
 * (exit 0) or refused / timed out (exit 1).
 *
 * Deno cannot fork, so the process that ctest runs (the parent) re-spawns
 * itself as a detached holder.  The holder connects and makes the request
 * itself, reports to the parent over its stdout pipe, and keeps the
 * connection (so the lease) open after the parent exits.  Its stdio is never
 * the caller's: ctest waits for every process that holds its pipes.
 *
 * With `--foreground`, `SAI_RESOURCE_FOREGROUND=1` or `-d LEVEL` (which
 * only upstream's tooling passes; `--detach` overrides it) the started
 * process holds the lease itself until signalled or its ctest exits
 * (`foreground.ts`), as upstream Sai's CMake scripts expect.
 *
 * With `-- CMD [ARGS...]` it is a launcher instead (`launcher.ts`): no
 * holder, the lease lasts as long as CMD.
 *
 * @module
 */

import { type Command, HELP, parseCommand } from "./client_args.ts";
import { formatHelp, usageError, versionLine } from "../shared/help.ts";
import { launch, runUnmanaged } from "./launcher.ts";
import { release } from "./release.ts";
import { check } from "./check.ts";
import { runHolder } from "./holder.ts";
import { runParent } from "./parent.ts";
import { runForeground } from "./foreground.ts";
import { encoder, EXIT_OK, EXIT_USAGE, printErr } from "./_common.ts";

/** Runs `sai-resource`; returns the exit code. */
export async function runClient(args: string[]): Promise<number> {
  let command: Command;
  try {
    command = parseCommand(args, Deno.env);
  } catch (err) {
    Deno.stderr.writeSync(
      encoder.encode(usageError("sai-resource", (err as Error).message) + "\n"),
    );
    return EXIT_USAGE;
  }
  switch (command.kind) {
    case "help":
      Deno.stdout.writeSync(encoder.encode(formatHelp(HELP) + "\n"));
      return EXIT_OK;
    case "version":
      Deno.stdout.writeSync(
        encoder.encode(versionLine("sai-resource") + "\n"),
      );
      return EXIT_OK;
    case "release":
      return await release(command.socket, command.cookie, command);
    case "check":
      return await check(command.socket, command);
    case "launch":
      return await launch(command.argv, command.options);
    case "unmanaged":
      if (!command.quiet) {
        printErr(
          "no builder socket (SAI_BUILDER_RESOURCE_PROXY is not set): --optional, so going ahead without a lease",
        );
      }
      return command.argv ? await runUnmanaged(command.argv) : EXIT_OK;
    case "acquire":
      return command.holder
        ? await runHolder(command)
        : command.foreground
        ? await runForeground(command)
        : await runParent(command);
  }
}

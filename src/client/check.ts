/**
 * `sai-resource --check`: ask the builder for its name, its server and the
 * state of its link, as a farm's health check or a first step when leases
 * stall.  Only our builder answers; an upstream Sai builder forwards the
 * question and never answers, so silence ends after a short wait.
 *
 * @module
 */

import { connectUnix, readMessages, writeAll } from "./lease_client.ts";
import {
  type BuilderStateMessage,
  encode,
  SCHEMA,
} from "../protocol/protocol.ts";
import { encoder, printErr } from "./_common.ts";
import { checkLines } from "./link_line.ts";

/** How long `--check` waits for the builder by default, in seconds. */
export const DEFAULT_CHECK_WAIT_SECONDS = 5;

/** `--check`'s exit codes. */
export const EXIT_LINKED = 0;
export const EXIT_NOT_LINKED = 1;
export const EXIT_NO_ANSWER = 2;

/** The builder did not answer a check; the message says why. */
export class CheckError extends Error {
  override name = "CheckError";
}

/**
 * Asks the builder at `socketPath` for its state.  Rejects with
 * {@linkcode CheckError} if it cannot be reached, refuses the question (a
 * builder from before `--check`) or says nothing within `waitSeconds`.
 */
export async function checkBuilder(
  socketPath: string,
  options: { waitSeconds: number },
): Promise<BuilderStateMessage> {
  const { waitSeconds } = options;
  const deadline = AbortSignal.timeout(waitSeconds * 1000);
  let conn: Deno.UnixConn;
  try {
    conn = await connectUnix(socketPath, deadline);
  } catch (err) {
    throw new CheckError(
      `Cannot reach the builder at "${socketPath}": ${(err as Error).message}`,
      { cause: err },
    );
  }
  const close = () => {
    try {
      conn.close();
    } catch { /* closed */ }
  };
  deadline.addEventListener("abort", close, { once: true });
  try {
    await writeAll(
      conn,
      encoder.encode(encode({ schema: SCHEMA, check: true })),
    );
    for await (const msg of readMessages(conn)) {
      if ("builder" in msg) return msg;
      if ("error" in msg) {
        throw new CheckError(
          `Cannot check the builder at "${socketPath}": it refused the question (a sai-builder from before --check?): ${msg.error}`,
        );
      }
    }
  } catch (err) {
    if (err instanceof CheckError) throw err;
    if (!deadline.aborted) {
      throw new CheckError(
        `Cannot check the builder at "${socketPath}": ${
          (err as Error).message
        }`,
        { cause: err },
      );
    }
  } finally {
    deadline.removeEventListener("abort", close);
    close();
  }
  if (deadline.aborted) {
    throw new CheckError(
      `Cannot check the builder at "${socketPath}": no answer within ${waitSeconds} s (an upstream Sai builder cannot answer --check)`,
    );
  }
  throw new CheckError(
    `Cannot check the builder at "${socketPath}": it closed the connection without answering`,
  );
}

/**
 * `--check`: prints the builder's name, server and link state on stdout;
 * returns 0 when linked, 1 when not, 2 when no builder answers.
 */
export async function check(
  socket: string,
  options: { waitSeconds: number },
): Promise<number> {
  let state: BuilderStateMessage;
  try {
    state = await checkBuilder(socket, options);
  } catch (err) {
    printErr((err as Error).message);
    return EXIT_NO_ANSWER;
  }
  Deno.stdout.writeSync(
    encoder.encode(checkLines(state.builder, state.link).join("\n") + "\n"),
  );
  return state.link.up ? EXIT_LINKED : EXIT_NOT_LINKED;
}

/**
 * `sai-resource --release COOKIE`: give back a lease held elsewhere, by its
 * cookie.
 *
 * @module
 */

import { connectUnix } from "./lease_client.ts";
import { parseServerMessage } from "../protocol/protocol.ts";
import { JsonObjectSplitter } from "../protocol/json_splitter.ts";
import { encoder, EXIT_FAILED, EXIT_OK, printErr } from "./_common.ts";

/**
 * Releases the lease `cookie` on the builder at `socket`; returns the exit
 * code.  A lease that had already expired passes with a warning saying how
 * long what it gated ran ungated; `strict` makes that a failure.
 */
export async function release(
  socket: string,
  cookie: string,
  options: { strict?: boolean } = {},
): Promise<number> {
  let conn: Deno.UnixConn;
  try {
    conn = await connectUnix(socket);
  } catch (err) {
    printErr(
      `cannot reach the builder at "${socket}": ${(err as Error).message}`,
    );
    return EXIT_FAILED;
  }
  try {
    await conn.write(
      encoder.encode(
        JSON.stringify({ schema: "com-warmcat-sai-resource", cookie }),
      ),
    );
    const splitter = new JsonObjectSplitter();
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      for (const text of splitter.push(buf.subarray(0, n))) {
        const msg = parseServerMessage(text);
        if ("released" in msg) {
          if (msg.expiredAt === undefined) return EXIT_OK;
          const ago = Math.max(
            0,
            Math.round((Date.now() - msg.expiredAt) / 1000),
          );
          printErr(
            `${
              options.strict ? "error" : "warning"
            }: the lease with cookie "${cookie}" had already expired ${ago} s ago: the tests it gated ran ungated for up to ${ago} s (raise LEASE_SECONDS)`,
          );
          return options.strict ? EXIT_FAILED : EXIT_OK;
        }
        if ("error" in msg) {
          printErr(msg.error);
          return EXIT_FAILED;
        }
      }
    }
    printErr("the builder closed the connection without answering");
    return EXIT_FAILED;
  } catch (err) {
    printErr(`cannot release: ${(err as Error).message}`);
    return EXIT_FAILED;
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

/**
 * The protocol's floor, for the throughput benchmark: a trivial program that
 * grants every request on a Unix socket (no server, no allocator, no
 * WebSocket).  Each connection costs what any Sai builder must pay per
 * lease: an accept, a read of the request, a write of the grant, a read of
 * the end of file, a close.  `deno run -A bench/_floor.ts SOCKET` prints
 * `listening` once ready.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function serve(conn: Deno.UnixConn): Promise<void> {
  const buf = new Uint8Array(4096);
  let text = "";
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) return;
      text += decoder.decode(buf.subarray(0, n));
      if (!text.trimEnd().endsWith("}")) continue;
      const { cookie } = JSON.parse(text);
      const grant = JSON.stringify({
        schema: "com-warmcat-sai-resource",
        cookie,
        amount: 1,
      });
      await conn.write(encoder.encode(grant + "\n"));
      // Wait for the client to close: that is its release.
      while (await conn.read(buf) !== null) { /* until EOF */ }
      return;
    }
  } catch {
    // The client went away.
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

/** Listens on `args[0]` and grants everything until killed. */
export async function main(args: string[]): Promise<void> {
  const path = args[0];
  if (!path) throw new TypeError("Usage: _floor.ts SOCKET");
  const listener = Deno.listen({ transport: "unix", path });
  // Exit cleanly on SIGTERM, so that --cpu-prof writes its profile.
  Deno.addSignalListener("SIGTERM", () => {
    listener.close();
    Deno.exit(0);
  });
  await Deno.stdout.write(encoder.encode("listening\n"));
  for await (const conn of listener) serve(conn);
}

if (import.meta.main) await main(Deno.args);

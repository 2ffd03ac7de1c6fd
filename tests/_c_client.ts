// deno-lint-ignore-file no-console -- a stand-in program: printing is its job
/**
 * Behaves as upstream's C `sai-resource` does on the wire (written from its
 * observed behaviour, no upstream code): it sends ONE JSON request with no
 * newline, only hex-dumps whatever it receives to stdout, stays connected,
 * and exits only when the connection drops or on SIGINT/SIGTERM, always with
 * status 1.  With no socket to reach it keeps trying until killed.  It takes
 * a trailing `-dLEVEL` as libwebsockets tools do, and ignores it.
 *
 *   deno run -A tests/_c_client.ts NAME AMOUNT LEASE COOKIE [-dLEVEL]
 *
 * The socket comes from SAI_BUILDER_RESOURCE_PROXY; `@NAME` is abstract.
 *
 * @module
 */

const args = Deno.args.filter((a) => !/^-d[0-9]*$/.test(a));
const [resname, amount, lease, cookie] = args;
const socket = Deno.env.get("SAI_BUILDER_RESOURCE_PROXY") ?? "";
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, () => Deno.exit(1));
}

const path = socket.startsWith("@") ? `\0${socket.slice(1)}` : socket;
let conn: Deno.UnixConn | undefined;
while (!conn) {
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch {
    // As the C client does: no socket, no exit; try again until killed.
    await new Promise((r) => setTimeout(r, 100));
  }
}
console.log("connected");
const request =
  `{"schema":"com-warmcat-sai-resource","resname":"${resname}","cookie":"${cookie}","amount":${amount},"lease":${lease}}`;
await conn.write(new TextEncoder().encode(request));
const buf = new Uint8Array(4096);
for (;;) {
  let n: number | null;
  try {
    n = await conn.read(buf);
  } catch {
    n = null;
  }
  if (n === null) break;
  console.log(
    "rx " +
      [...buf.subarray(0, n)].map((b) => b.toString(16).padStart(2, "0"))
        .join(""),
  );
}
console.log("connection dropped");
Deno.exit(1);

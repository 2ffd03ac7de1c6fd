import assert from "node:assert/strict";
import { releaseCookie, ReleaseError } from "./release.ts";

/** A one-connection Unix socket peer that answers with `reply`. */
async function withPeer(
  reply: (conn: Deno.UnixConn, request: string) => Promise<void>,
  fn: (path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sai-release-" });
  const path = `${dir}/b.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const served = (async () => {
    const conn = await listener.accept();
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    await reply(conn, new TextDecoder().decode(buf.subarray(0, n ?? 0)));
    // Hold the connection until the client closes it.
    await conn.read(buf).catch(() => null);
    try {
      conn.close();
    } catch { /* the reply closed it */ }
  })();
  try {
    await fn(path);
  } finally {
    listener.close();
    await served;
    await Deno.remove(dir, { recursive: true });
  }
}

const encoder = new TextEncoder();

Deno.test("releaseCookie() resolves when the builder confirms", async () => {
  let asked = "";
  await withPeer(async (conn, request) => {
    asked = request;
    await conn.write(encoder.encode(
      `{"schema":"com-warmcat-sai-resource","cookie":"c1","released":true}`,
    ));
  }, async (path) => {
    assert.deepEqual(await releaseCookie(path, "c1"), {});
  });
  assert.equal(asked, `{"schema":"com-warmcat-sai-resource","cookie":"c1"}`);
});

Deno.test("releaseCookie() gives up on a silent builder after waitSeconds, saying why", async () => {
  await withPeer(async () => {}, async (path) => {
    const started = Date.now();
    const err = await releaseCookie(path, "c1", { waitSeconds: 0.2 }).then(
      () => undefined,
      (e) => e,
    );
    assert.ok(err instanceof ReleaseError, String(err));
    assert.equal(err.kind, "no answer");
    assert.match(
      err.message,
      /^Cannot release "c1": the builder did not answer within 0.2 s; upstream Sai builders cannot release by cookie/,
    );
    // Not a timing test: only that the wait ended, long before any default.
    assert.ok(Date.now() - started < 5000);
  });
});

Deno.test("releaseCookie() passes a refusal on, and reports a close without answer", async () => {
  await withPeer(async (conn) => {
    await conn.write(encoder.encode(
      `{"schema":"com-warmcat-sai-resource","cookie":"c1","error":"Cannot release: no lease"}`,
    ));
  }, async (path) => {
    await assert.rejects(
      releaseCookie(path, "c1"),
      (e) =>
        e instanceof ReleaseError && e.kind === "refused" &&
        e.message === "Cannot release: no lease",
    );
  });
  await withPeer((conn) => {
    conn.close();
    return Promise.resolve();
  }, async (path) => {
    await assert.rejects(
      releaseCookie(path, "c1"),
      (e) => e instanceof ReleaseError && e.kind === "closed",
    );
  });
});

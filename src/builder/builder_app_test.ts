import assert from "node:assert/strict";
import { startBuilder } from "./builder_app.ts";
import { Logger } from "../shared/log.ts";
import { JsonObjectSplitter } from "../protocol/json_splitter.ts";
import { SCHEMA } from "../protocol/protocol.ts";

/**
 * A builder for `server` on a socket in a temp dir, that records its error
 * log lines, and a way to wait for them.
 */
async function recordingBuilder(
  server: string,
  options: { connectTimeoutMs?: number } = {},
) {
  const dir = await Deno.makeTempDir({ prefix: "sai-builder-app-test-" });
  const errors: string[] = [];
  let wake = () => {};
  const builder = await startBuilder({
    server,
    socketPath: `${dir}/b.sock`,
    name: "t",
    ...options,
    logger: new Logger("error", {
      write: (line) => {
        errors.push(line);
        wake();
      },
    }),
  });
  /** Waits for `done`, failing after 5 s. */
  const until = async (what: string, done: () => boolean) => {
    const deadline = setTimeout(() => wake(), 5_000);
    const started = performance.now();
    try {
      while (!done()) {
        if (performance.now() - started > 5_000) {
          throw new Error(`Timed out waiting for ${what}; log: ${errors}`);
        }
        await new Promise<void>((r) => wake = r);
      }
    } finally {
      clearTimeout(deadline);
    }
  };
  return {
    builder,
    errors,
    until,
    [Symbol.asyncDispose]: async () => {
      await builder.shutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A raw client on the builder's socket: what it was sent, as it comes. */
async function rawClient(path: string, msg: Record<string, unknown>) {
  const conn = await Deno.connect({ transport: "unix", path });
  await conn.write(
    new TextEncoder().encode(JSON.stringify({ schema: SCHEMA, ...msg })),
  );
  const received: Record<string, unknown>[] = [];
  const splitter = new JsonObjectSplitter();
  const reading = (async () => {
    const buf = new Uint8Array(4096);
    try {
      for (let n; (n = await conn.read(buf)) !== null;) {
        for (const t of splitter.push(buf.subarray(0, n))) {
          received.push(JSON.parse(t));
        }
      }
    } catch { /* closed */ }
  })();
  return {
    received,
    [Symbol.asyncDispose]: async () => {
      try {
        conn.close();
      } catch { /* closed */ }
      await reading;
    },
  };
}

Deno.test("`startBuilder()` tells a waiting client the link is down once, not at every failed retry", async () => {
  // A port nothing listens on: every attempt is refused at once.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = probe.addr;
  probe.close();
  await using b = await recordingBuilder(`ws://127.0.0.1:${port}`);
  await using waiting = await rawClient(b.builder.socketPath, {
    resname: "r",
    cookie: "w",
    amount: 1,
    lease: 30,
    link: true,
  });
  await b.until("three failed attempts", () => b.errors.length >= 3);
  assert.equal(waiting.received.length, 1);
  const link = waiting.received[0]!.link as Record<string, unknown>;
  assert.equal(link.up, false);
  assert.match(String(link.error), /refused/i);
  // The last error stays current for --check, without a change.
  await using check = await rawClient(b.builder.socketPath, { check: true });
  await b.until("the check's answer", () => check.received.length > 0);
  const now = check.received[0]!.link as Record<string, unknown>;
  // The same moment, shown on the wall clock of each answer (to the ms).
  assert.ok(
    Math.abs(Number(now.since) - Number(link.since)) <= 1,
    `since ${now.since}, was ${link.since}`,
  );
  assert.match(String(now.error), /refused/i);
});

Deno.test("`startBuilder()` gives up an attempt that does not open in time, and drops its connection", async () => {
  // Accepts the TCP connection and never answers the WebSocket handshake.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  await using b = await recordingBuilder(
    `ws://127.0.0.1:${listener.addr.port}`,
    { connectTimeoutMs: 200 },
  );
  const conn = await accepted;
  try {
    await using waiting = await rawClient(b.builder.socketPath, {
      resname: "r",
      cookie: "w",
      amount: 1,
      lease: 30,
      link: true,
    });
    await b.until("the link to be known down", () => b.errors.length > 0);
    assert.match(b.errors[0]!, /no connection within 0\.2 s/);
    await b.until("the client to hear", () => waiting.received.length > 0);
    const link = waiting.received[0]!.link as Record<string, unknown>;
    assert.equal(link.up, false);
    assert.equal(link.error, "no connection within 0.2 s");
    // The handshake was abandoned: the connection is closed, not left
    // open until the kernel gives up.
    let open = true;
    const late = setTimeout(() => {
      if (open) conn.close();
    }, 5_000);
    const buf = new Uint8Array(4096);
    try {
      while (await conn.read(buf) !== null);
      open = false;
    } catch {
      // Closed by the deadline above.
    } finally {
      clearTimeout(late);
    }
    assert.equal(open, false, "still open after 5 s");
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
    listener.close();
  }
});

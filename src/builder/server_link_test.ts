import assert from "node:assert/strict";
import { type LinkStatus, ServerLink } from "./server_link.ts";
import { Logger } from "../shared/log.ts";

/** A link to `server` that records its state changes and error log lines. */
function recordingLink(
  server: string,
  options: { connectTimeoutMs?: number } = {},
) {
  const changes: LinkStatus[] = [];
  const errors: string[] = [];
  let wake = () => {};
  const link = new ServerLink({
    server,
    name: "t",
    heartbeatMs: 10_000,
    maxBackoffMs: 5_000,
    ...options,
    log: new Logger("error", {
      write: (line) => {
        errors.push(line);
        wake();
      },
    }),
    onOpen: () => {},
    onMessage: () => {},
    onFence: () => 0,
    onLost: () => {},
    onLinkChange: (status) => {
      changes.push(status);
      wake();
    },
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
  return { link, changes, errors, until };
}

Deno.test("`ServerLink` tells the link is down once, not at every failed retry", async () => {
  // A port nothing listens on: every attempt is refused at once.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = probe.addr;
  probe.close();
  const { link, changes, errors, until } = recordingLink(
    `ws://127.0.0.1:${port}`,
  );
  link.start();
  try {
    await until("three failed attempts", () => errors.length >= 3);
    assert.equal(changes.length, 1);
    assert.equal(changes[0]!.up, false);
    assert.match(changes[0]!.error ?? "", /refused/i);
    // The last error stays current for --check, without a change.
    assert.equal(link.status.since, changes[0]!.since);
  } finally {
    link.close();
  }
});

Deno.test("`ServerLink` gives up an attempt that does not open in time, and drops its connection", async () => {
  // Accepts the TCP connection and never answers the WebSocket handshake.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const { link, changes, until } = recordingLink(
    `ws://127.0.0.1:${listener.addr.port}`,
    { connectTimeoutMs: 200 },
  );
  link.start();
  const conn = await accepted;
  try {
    await until("the link to be known down", () => changes.length > 0);
    // Stopped before its retry: this test is about the first attempt.
    link.close();
    assert.equal(changes[0]!.up, false);
    assert.equal(changes[0]!.error, "no connection within 0.2 s");
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
    link.close();
    try {
      conn.close();
    } catch { /* closed */ }
    listener.close();
  }
});

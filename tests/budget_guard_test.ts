/**
 * Regression tests for issue 9, one per hole found: the budget holds under
 * faults and hostile peers.  Real processes throughout; the fault matrix
 * (every fault against cycling clients) is tests/fault_matrix_test.ts.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  BuilderProc,
  cRequest,
  holderPids,
  killHolders,
  Lines,
  Proc,
  RawBuilder,
  RawClient,
  runArgs,
  runClient,
  ServerProc,
  uniq,
  waitFor,
} from "./_harness.ts";
import { FaultProxy } from "./_proxy.ts";

const SCHEMA = "com-warmcat-sai-resource";
const SESSION = "a-session-long-enough-0123456789";

/** A raw TCP connection that speaks the WebSocket handshake by hand. */
class RawSocket {
  conn: Deno.TcpConn;
  bytes = new Uint8Array(0);
  eof = false;
  #reading: Promise<void>;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.#reading = (async () => {
      const buf = new Uint8Array(65536);
      try {
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) break;
          const next = new Uint8Array(this.bytes.length + n);
          next.set(this.bytes);
          next.set(buf.subarray(0, n), this.bytes.length);
          this.bytes = next;
        }
      } catch {
        // Reset.
      }
      this.eof = true;
    })();
  }

  static async open(port: number, extra = ""): Promise<RawSocket> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const s = new RawSocket(conn);
    await s.write(
      `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
        `Sec-WebSocket-Version: 13\r\n${extra}\r\n`,
    );
    return s;
  }

  get text(): string {
    return new TextDecoder().decode(this.bytes);
  }

  async write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string"
      ? new TextEncoder().encode(data)
      : data;
    let at = 0;
    while (at < bytes.length) at += await this.conn.write(bytes.subarray(at));
  }

  /** A masked text frame (mask 0: the payload goes as is). */
  async sendText(text: string): Promise<void> {
    const payload = new TextEncoder().encode(text);
    assert.ok(payload.length < 126);
    await this.write(
      new Uint8Array([0x81, 0x80 | payload.length, 0, 0, 0, 0, ...payload]),
    );
  }

  /** Only the header of a text frame announcing `length` bytes. */
  async sendHugeHeader(length: number): Promise<void> {
    const head = new Uint8Array(14);
    head[0] = 0x81;
    head[1] = 0x80 | 127;
    new DataView(head.buffer).setBigUint64(2, BigInt(length));
    await this.write(head);
  }

  async until(what: string, done: () => boolean): Promise<void> {
    await waitFor(what, () => done() || (this.eof && done()), 5_000);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // Closed.
    }
    await this.#reading;
  }
}

/** The close code of a close frame from the server, if one arrived. */
function closeCode(bytes: Uint8Array): number | undefined {
  const text = new TextDecoder().decode(bytes);
  let at = text.indexOf("\r\n\r\n");
  if (at < 0) return undefined;
  at += 4;
  while (at + 2 <= bytes.length) {
    const opcode = bytes[at]! & 0x0f;
    const len = bytes[at + 1]! & 0x7f;
    if (len > 125) return undefined;
    if (opcode === 0x8) return (bytes[at + 2]! << 8) | bytes[at + 3]!;
    at += 2 + len;
  }
  return undefined;
}

Deno.test("the server refuses a frame larger than 16 KiB at its header, before and after the hello", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  // Before the hello: 60 MB announced, not one byte of it sent.
  await using before = await RawSocket.open(server.port);
  await before.until("the upgrade", () => /^HTTP\/1\.1 101/.test(before.text));
  await before.sendHugeHeader(60_000_000);
  await before.until("the close", () => before.eof);
  assert.equal(closeCode(before.bytes), 1009);

  // After the hello, with a lease held: the same, and the link's end frees
  // nothing early (the builder grace keeps its lease counted).
  await using after = await RawSocket.open(server.port);
  await after.until("the upgrade", () => /^HTTP\/1\.1 101/.test(after.text));
  await after.sendText(
    JSON.stringify({ schema: SCHEMA, hello: { name: "big" } }),
  );
  await after.until("the welcome", () => after.text.includes("welcome"));
  await after.sendHugeHeader(17 * 1024);
  await after.until("the close", () => after.eof);
  assert.equal(closeCode(after.bytes), 1009);

  // The server still serves.
  await using b = await RawBuilder.connect(server.url, { name: "fine" });
  b.send({ resname: "r", cookie: "ok", amount: 2, lease: 30 });
  await b.next((m) => m.cookie === "ok" && m.amount === 2);
});

Deno.test("the server refuses a WebSocket upgrade that carries an Origin header", async () => {
  await using server = await ServerProc.start(["--resources", "r=2"]);
  await using s = await RawSocket.open(
    server.port,
    "Origin: http://127.0.0.1:9999\r\n",
  );
  await s.until("the answer", () => s.text.includes("\r\n\r\n"));
  assert.match(s.text, /^HTTP\/1\.1 403/);
  await server.stderr.wait(/builder refused .*Origin/);
  assert.equal((await server.status()).builders.length, 0);
});

Deno.test("restores are validated like requests and never take a builder past the budget", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "r=2",
    "--max-lease",
    "600",
  ]);
  await using b = await RawBuilder.connect(server.url, {
    name: "b1",
    session: SESSION,
  });
  await b.next((m) => m.welcome !== undefined);
  const restore = (cookie: string, amount: number, lease: number) =>
    b.send({ resname: "r", cookie, amount, lease, restore: "lease" });
  restore("huge", 4e9, 60);
  restore("long", 1, 4e9);
  restore("fits", 2, 60);
  restore("more", 1, 60);
  const error = async (cookie: string) =>
    (await b.next((m) => m.cookie === cookie)).error as string;
  assert.match(await error("huge"), /exceeds the budget of 2/);
  assert.match(await error("long"), /exceeds the limit of 600 s/);
  assert.match(await error("more"), /would hold 3, over the budget of 2/);
  const r = await server.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), ["fits"]);
  assert.equal(r.peak, 2);
  const { stats } = await server.status();
  assert.equal(stats.refusals["exceeds-budget"], 2);
  assert.equal(stats.refusals["lease-too-long"], 1);
  assert.equal(stats.restores, 1);
});

Deno.test("a hello's session must be long enough to be a secret", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  const b = await RawBuilder.connect(server.url, { name: "x", session: "c6" });
  const ev = await b.closed;
  assert.equal(ev.code, 1008);
  assert.match(ev.reason, /a session must be 16 to 64 characters/);
});

Deno.test("a cookie reused while the link is down does not keep the dead holder's lease", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using proxy = new FaultProxy(server.port);
  await using builder = await BuilderProc.start(server, {
    url: proxy.url,
    args: ["--log-level", "debug"],
  });
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "1", "300", "SCOPEX"], env)).code, 0);
  proxy.target = 1;
  proxy.cut();
  await builder.stderr.wait(/lost the server/);
  for (const pid of await holderPids("SCOPEX", builder)) {
    Deno.kill(pid, "SIGKILL");
  }
  await builder.stderr.wait(/released cookie=SCOPEX/);
  // The same cookie again, held in the builder until the link is back: the
  // server sees it before the reconnect's `restored` marker.
  const again = new Proc(["client.ts", "r", "1", "300", "SCOPEX"], { env });
  await builder.stderr.wait(
    /DEBUG request .*cookie=SCOPEX[\s\S]*DEBUG request .*cookie=SCOPEX/,
  );
  proxy.target = server.port;
  const got = await again.finished();
  assert.equal(got.code, 1, got.stderr);
  assert.match(got.stderr, /cookie "SCOPEX" is already in use/);
  await server.stderr.wait(
    /dropped after reconnect: not restored builder=\S+ cookie=SCOPEX/,
  );
  const r = await server.resource("r");
  assert.equal(r.allocated, 0, "the dead holder's lease is gone");
  assert.equal((await runClient(["r", "1", "30", "SCOPEX"], env)).code, 0);
});

Deno.test("a builder ends a lease at its own end while the link is frozen, before the server grants it again", async () => {
  // Fence 2 s, past the 1 s lease: the builder ends it by its own clock.
  // The server notices the silence after a heartbeat (2 s), then keeps the
  // lease for the builder grace, past its end: a frozen builder could not
  // have told its holder.
  await using server = await ServerProc.start([
    "--resources",
    "r=1",
    "--heartbeat",
    "2",
    "--builder-grace",
    "4",
  ]);
  await using proxy = new FaultProxy(server.port);
  await using far = await BuilderProc.start(server, {
    url: proxy.url,
    name: "far",
    args: ["--heartbeat", "2"],
  });
  await using near = await BuilderProc.start(server, { name: "near" });
  await using c = await RawClient.connect(far.socket);
  await c.send(
    `{"schema":"${SCHEMA}","resname":"r","cookie":"brief","amount":1,"lease":1}`,
  );
  await c.until((t) => t.includes('"amount":1'));
  proxy.blackhole();
  await using d = await RawClient.connect(near.socket);
  await d.send(
    `{"schema":"${SCHEMA}","resname":"r","cookie":"next","amount":1,"lease":30}`,
  );
  let farEnded = 0;
  let nearGranted = 0;
  await Promise.all([
    c.until((t) => t.includes('"expired":true'), 10_000).then(() =>
      farEnded = performance.now()
    ),
    d.until((t) => t.includes('"amount":1'), 15_000).then(() =>
      nearGranted = performance.now()
    ),
  ]);
  assert.ok(
    farEnded < nearGranted,
    `the far holder was told at ${farEnded}, the near one granted at ${nearGranted}`,
  );
});

Deno.test("after a crash the restarted server admits only restores until the builders are back", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sai-state-" });
  const state = `${dir}/state.json`;
  const args = ["--resources", "r=1", "--state-file", state];
  try {
    const first = await ServerProc.start(args);
    await using proxy = new FaultProxy(first.port);
    await using builder = await BuilderProc.start(first, { url: proxy.url });
    const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
    assert.equal((await runClient(["r", "1", "120", "held"], env)).code, 0);
    first.kill("SIGKILL");
    await first.finished();
    proxy.target = 1;
    await builder.stderr.wait(/lost the server/);

    await using second = await ServerProc.start(args);
    await second.stderr.wait(/reclaim grace: the last run did not end cleanly/);
    assert.notEqual((await second.status()).reclaimUntil, null);
    await using late = await RawBuilder.connect(second.url, {
      name: "late",
      session: SESSION,
    });
    late.send({ resname: "r", cookie: "new", amount: 1, lease: 30 });
    await waitFor(
      "the new request to queue",
      async () => (await second.resource("r")).queuedRequests === 1,
    );
    assert.equal((await second.resource("r")).allocated, 0, "not granted");
    proxy.target = second.port;
    await second.stderr.wait(
      /reclaim grace ended reason=all builders restored/,
    );
    const r = await second.resource("r");
    assert.deepEqual(r.leases.map((l) => l.cookie), ["held"]);
    assert.equal(r.queuedRequests, 1, "the restore got the unit, not new");
    assert.equal((await second.status()).reclaimUntil, null);
    assert.equal((await runClient(["--release", "held"], env)).code, 0);
    await late.next((m) => m.cookie === "new" && m.amount === 1);
    assert.equal((await second.resource("r")).overBudgetGrants, 0);

    // A clean stop with nothing held: the next start grants at once.
    late.send({ cookie: "new" });
    await waitFor(
      "nothing held",
      async () => (await second.resource("r")).allocated === 0,
    );
    await second.stop();
    await using third = await ServerProc.start(args);
    assert.equal((await third.status()).reclaimUntil, null);
    assert.doesNotMatch(third.stderr.text, /reclaim grace/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a fresh server grants its first lease at once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sai-state-" });
  try {
    await using server = await ServerProc.start([
      "--resources",
      "r=1",
      "--state-file",
      `${dir}/state.json`,
    ]);
    assert.equal((await server.status()).reclaimUntil, null);
    await using b = await RawBuilder.connect(server.url, {
      name: "b",
      session: SESSION,
    });
    b.send({ resname: "r", cookie: "first", amount: 1, lease: 30 });
    await b.next((m) => m.cookie === "first" && m.amount === 1, 2_000);
    const saved = JSON.parse(await Deno.readTextFile(`${dir}/state.json`));
    assert.equal(saved.clean, false, "marked dirty while running");
    assert.equal(saved.builders.length, 1);
    assert.doesNotMatch(JSON.stringify(saved), new RegExp(SESSION));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the builder refuses a socket directory other users can write", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  const dir = await Deno.makeTempDir({ prefix: "sai-squat-" });
  try {
    await Deno.mkdir(`${dir}/open`);
    await Deno.chmod(`${dir}/open`, 0o777);
    const p = new Proc([
      "builder.ts",
      "--server",
      server.url,
      "--socket",
      `${dir}/open/b.sock`,
      "--name",
      "b",
    ]);
    const got = await p.finished();
    assert.equal(got.code, 1, got.stderr);
    assert.match(
      got.stderr,
      new RegExp(
        `Cannot use socket directory "${dir}/open": it is writable by others \\(mode 0777\\)`,
      ),
    );
    assert.match(got.stderr, /--socket in a directory only you can write/);
    // A sticky one, as /tmp is, is fine: nobody can swap our file there.
    await Deno.mkdir(`${dir}/sticky`);
    await Deno.chmod(`${dir}/sticky`, 0o1777);
    await using ok = await BuilderProc.start(server, {
      dir: `${dir}/sticky`,
      name: "s",
    });
    assert.equal(
      (await runClient(["r", "1", "30"], {
        SAI_BUILDER_RESOURCE_PROXY: ok.socket,
      })).code,
      0,
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test({
  name: "the builder refuses a sticky socket directory that another user owns",
  // Needs root to give the directory away (to nobody, 65534).
  ignore: Deno.uid() !== 0,
  fn: async () => {
    await using server = await ServerProc.start(["--resources", "r=1"]);
    const dir = await Deno.makeTempDir({ prefix: "sai-squat-" });
    try {
      // As in /tmp/sai-UID made by another user: its owner may remove our
      // socket and bind its own, whatever the sticky bit says.
      await Deno.mkdir(`${dir}/theirs`);
      await Deno.chmod(`${dir}/theirs`, 0o1777);
      await Deno.chown(`${dir}/theirs`, 65534, null);
      const p = new Proc([
        "builder.ts",
        "--server",
        server.url,
        "--socket",
        `${dir}/theirs/b.sock`,
        "--name",
        "b",
      ]);
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        // Exits at once, or fails here instead of hanging (the old builder
        // ran on): killed only once the deadline passes, never while it
        // exits by itself.
        await Promise.race([
          p.child.status,
          new Promise((resolve) => timer = setTimeout(resolve, 10_000)),
        ]);
      } finally {
        clearTimeout(timer);
        p.kill("SIGKILL");
      }
      const got = await p.finished();
      assert.equal(got.code, 1, got.stderr);
      assert.match(
        got.stderr,
        new RegExp(
          `Cannot use socket directory "${dir}/theirs": it is owned by uid 65534, not by this user \\(uid 0\\) or root`,
        ),
      );
      assert.doesNotMatch(got.stdout, /SAI_BUILDER_RESOURCE_PROXY/);
      // Root's own sticky directory (as /tmp is) stays fine.
      await Deno.chown(`${dir}/theirs`, 0, null);
      await using ok = await BuilderProc.start(server, {
        dir: `${dir}/theirs`,
        name: "s",
      });
      assert.equal(ok.socket, `${dir}/theirs/s.sock`);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("the builder backs off on accept errors (EMFILE) and logs them once a second", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  const dir = await Deno.makeTempDir({ prefix: "sai-emfile-" });
  // Unique: killHolders() below reaches every holder on the machine whose
  // command line names it, another test run's too.
  const cookie = uniq("after-emfile");
  // Few descriptors: a few dozen connections exhaust them.
  const child = new Deno.Command("prlimit", {
    args: [
      "--nofile=40:40",
      Deno.execPath(),
      ...runArgs("builder.ts"),
      "--server",
      server.url,
      "--socket",
      `${dir}/b.sock`,
      "--name",
      "b",
    ],
    cwd: new URL("..", import.meta.url).pathname,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Lines(child.stdout);
  const stderr = new Lines(child.stderr);
  const conns: Deno.UnixConn[] = [];
  try {
    await stdout.wait(/SAI_BUILDER_RESOURCE_PROXY=/);
    await stderr.wait(/connected to server/);
    for (let i = 0; i < 60; i++) {
      conns.push(
        await Deno.connect({ transport: "unix", path: `${dir}/b.sock` }),
      );
    }
    await stderr.wait(/accept failed .*repeated=1\b/);
    // The next line sums up the failures since: a count, not a flood.
    await stderr.wait(/accept failed .*repeated=(?:[2-9]|\d{2,})/);
    const lines = stderr.text.match(/accept failed/g) ?? [];
    assert.ok(lines.length <= 3, `${lines.length} lines`);
    for (const c of conns.splice(0)) c.close();
    const got = await runClient(["r", "1", "30", cookie], {
      SAI_BUILDER_RESOURCE_PROXY: `${dir}/b.sock`,
    });
    assert.equal(got.code, 0, got.stderr);
  } finally {
    for (const c of conns) c.close();
    child.kill("SIGKILL");
    await child.status;
    await Promise.all([stdout.done, stderr.done]);
    await killHolders(cookie);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("a name bound to a token cannot be taken with a shared token", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sai-tokens-" });
  try {
    await Deno.writeTextFile(
      `${dir}/tokens`,
      "ci1:bound-token-0123456789\nshared-token-9876543210\n",
    );
    await Deno.writeTextFile(`${dir}/shared`, "shared-token-9876543210\n");
    await using server = await ServerProc.start([
      "--resources",
      "r=1",
      "--builder-tokens",
      `${dir}/tokens`,
    ]);
    await using squatter = await BuilderProc.start(server, {
      name: "ci1",
      args: ["--token-file", `${dir}/shared`],
      noWait: true,
    });
    await squatter.stderr.wait(/refused by the server: authentication failed/);
    await using _other = await BuilderProc.start(server, {
      name: "ci2",
      args: ["--token-file", `${dir}/shared`],
    });
    assert.deepEqual(
      (await server.status()).builders.map((b) => b.name),
      ["ci2"],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the admin API stops reading a chunked body past its limit", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "r=1",
    "--admin-token",
    "admin-token-0123",
  ]);
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      // Endless: only the server stopping early ends this request.
      sent += 64 * 1024;
      controller.enqueue(new Uint8Array(64 * 1024).fill(0x20));
    },
  });
  const res = await fetch(`http://127.0.0.1:${server.port}/api/resources/r`, {
    method: "POST",
    headers: { authorization: "Bearer admin-token-0123" },
    body,
  });
  assert.equal(res.status, 400);
  assert.match((await res.json()).error, /larger than 4096 bytes/);
  assert.ok(sent < 64 * 1024 * 1024, `sent ${sent} bytes`);
  assert.equal((await server.resource("r")).budget, 1);
});

Deno.test("a reader of /api/events that stops reading misses snapshots instead of growing the server", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using b = await RawBuilder.connect(server.url, {
    name: "bulk",
    session: SESSION,
  });
  await b.next((m) => m.welcome !== undefined);
  // A long queue makes every snapshot about a megabyte.
  b.send({ resname: "r", cookie: "head", amount: 1, lease: 600 });
  for (let i = 0; i < 6000; i++) {
    b.send({ resname: "r", cookie: `q${i}`, amount: 1, lease: 600 });
  }
  await waitFor(
    "the queue",
    async () => (await server.resource("r")).queuedRequests === 6000,
  );
  // A stalled reader: it asks for the stream and reads nothing.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await conn.write(
      new TextEncoder().encode(
        "GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
      ),
    );
    // 40 changes, each pushed: a reader that keeps up sees every one.
    const live = await fetch(`http://127.0.0.1:${server.port}/api/events`);
    const reader = live.body!.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    const sees = async (cookie: string) => {
      while (!seen.includes(`"cookie":"${cookie}"`)) {
        const { value, done } = await reader.read();
        if (done) throw new Error("the event stream ended");
        seen = seen.slice(-100) + value;
      }
    };
    for (let i = 0; i < 40; i++) {
      b.send({ resname: "r", cookie: `extra${i}`, amount: 1, lease: 600 });
      await sees(`extra${i}`);
    }
    await reader.cancel();
    // Now read it all, up to the latest snapshot.
    const buf = new Uint8Array(1 << 20);
    const decoder = new TextDecoder();
    const marker = "event: status\n";
    let text = "";
    let frames = 0;
    while (!text.includes('"cookie":"extra39"')) {
      const n = await conn.read(buf);
      if (n === null) break;
      // Keep a short tail: a marker or the cookie may straddle two reads.
      const carry = text.slice(-40);
      text = carry + decoder.decode(buf.subarray(0, n), { stream: true });
      frames += text.split(marker).length - 1 -
        (carry.split(marker).length - 1);
    }
    assert.ok(text.includes('"cookie":"extra39"'), "the latest snapshot");
    assert.ok(frames < 20, `${frames} snapshots of 40 changes were kept`);
  } finally {
    conn.close();
  }
});

Deno.test("a state file the server cannot write is a start-up error naming it", async () => {
  const got = await new Proc([
    "server.ts",
    "--resources",
    "r=1",
    "--listen",
    "127.0.0.1:0",
    "--state-file",
    "/proc/no-such-dir/state.json",
  ]).finished();
  assert.equal(got.code, 1);
  assert.match(
    got.stderr,
    /Cannot use the state file "\/proc\/no-such-dir\/state\.json": .*pass --state-file PATH/,
  );
  assert.doesNotMatch(got.stdout, /listening/);
});

Deno.test("a restore never takes a resource past its budget, and its holder is told the lease is lost", async () => {
  // Three fresh sessions each restoring the whole budget: on eb93bea all
  // three were admitted (allocated 6 of 2), fault or no fault.
  {
    await using server = await ServerProc.start(["--resources", "r=2"]);
    const raws: RawBuilder[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const b = await RawBuilder.connect(server.url, {
          name: `raw${i}`,
          session: `${SESSION}-${i}`,
        });
        raws.push(b);
        await b.next((m) => m.welcome !== undefined);
        b.send({
          resname: "r",
          cookie: `fake${i}`,
          amount: 2,
          lease: 60,
          restore: "lease",
        });
        await b.next((m) => m.cookie === `fake${i}`);
      }
      assert.equal(
        raws[0]!.messages.find((m) => m.cookie === "fake0")?.amount,
        2,
      );
      for (const b of raws.slice(1)) {
        const answer = b.messages.find((m) => /^fake/.test(String(m.cookie)));
        assert.match(String(answer?.error), /would exceed the budget/);
      }
      const r = await server.resource("r");
      assert.equal(r.allocated, 2);
      assert.equal(r.overBudgetGrants, 0);
      assert.equal(
        (await server.status()).stats.refusals["restore-over-budget"],
        2,
      );
    } finally {
      for (const b of raws) b.ws.close();
    }
  }

  // A builder whose restore is refused tells its launcher, which stops
  // its command as at an expiry.
  const first = await ServerProc.start(["--resources", "r=2"]);
  await using proxy = new FaultProxy(first.port);
  await using builder = await BuilderProc.start(first, { url: proxy.url });
  const cookie = uniq("lost");
  const launcher = new Proc([
    "client.ts",
    "r",
    "2",
    "120",
    cookie,
    "--kill-on-expiry",
    "--grace",
    "5",
    "--",
    "sleep",
    "120",
  ], { env: { SAI_BUILDER_RESOURCE_PROXY: builder.socket } });
  try {
    await waitFor(
      "the launcher's lease",
      async () => (await first.resource("r")).allocated === 2,
    );
    proxy.target = 1;
    first.kill("SIGKILL");
    await first.finished();
    await builder.stderr.wait(/lost the server/);
    // A server without a state file starts afresh: someone else takes the
    // units before the builder is back.
    await using second = await ServerProc.start(["--resources", "r=2"]);
    await using other = await RawBuilder.connect(second.url, {
      name: "other",
      session: SESSION,
    });
    other.send({ resname: "r", cookie: "taken", amount: 2, lease: 60 });
    await other.next((m) => m.cookie === "taken" && m.amount === 2);
    proxy.target = second.port;
    await builder.stderr.wait(
      /lease lost: the server ended it .*restore-over-budget|lease lost: the server ended it .*would exceed the budget/,
    );
    const got = await launcher.finished();
    assert.match(got.stderr, /expired while "sleep"/);
    assert.equal(got.code, 143, got.stderr);
    const r = await second.resource("r");
    assert.deepEqual(r.leases.map((l) => l.cookie), ["taken"]);
    assert.equal(r.overBudgetGrants, 0);
  } finally {
    launcher.kill("SIGKILL");
    await launcher.finished();
  }
});

Deno.test("an expiry that arrives late does not touch a later lease under the same cookie", async () => {
  // Leases are known by their grant's id end to end, not by their cookie:
  // here A's lease ends while the link is frozen, and B asks for the same
  // cookie before the server has heard of it.  On eb93bea the server
  // expired A's lease by its own clock a second past its end, the expiry
  // crossed B's request, and the builder told B its lease had expired
  // before B was granted, then gave B's grant straight back.  Now the
  // server waits a heartbeat more, and hears the builder's yield of A's
  // grant (named by its id) first.
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using proxy = new FaultProxy(server.port);
  await using builder = await BuilderProc.start(server, { url: proxy.url });
  const cookie = uniq("reused");
  await using a = await RawClient.connect(builder.socket);
  await a.send(cRequest("r", cookie, 1, 1));
  await a.until((t) => /"amount"/.test(t));
  // The builder ends A's lease at its own end and yields it, but the link
  // is frozen, past the old margin of a second (well within the heartbeat).
  proxy.freeze();
  const frozenAt = performance.now();
  try {
    await a.until((t) => /"expired"/.test(t), 5000);
    await using b = await RawClient.connect(builder.socket);
    await b.send(cRequest("r", cookie, 1, 30));
    // The fault's length is the point: past a second after A's end.
    await new Promise((r) =>
      setTimeout(r, Math.max(0, 2_500 - (performance.now() - frozenAt)))
    );
    proxy.thaw();
    const text = await b.until((t) => /"amount"|"expired"|"error"/.test(t));
    assert.match(text, /"amount":1/, "B is granted");
    assert.doesNotMatch(text, /"expired"|"error"/);
    await waitFor("B's lease on the server", async () => {
      const r = await server.resource("r");
      return r.leases.length === 1 && r.leases[0]!.cookie === cookie;
    });
    // One more round trip through the builder: B's lease is still there.
    await using c = await RawClient.connect(builder.socket);
    await c.send(cRequest("r", uniq("c"), 1, 30));
    await waitFor(
      "C to queue behind B",
      async () => (await server.resource("r")).queuedRequests === 1,
    );
    const r = await server.resource("r");
    assert.deepEqual(r.leases.map((l) => l.cookie), [cookie]);
    assert.doesNotMatch(b.text, /"expired"/);
  } finally {
    proxy.thaw();
  }
});

Deno.test("during the reclaim grace only the sessions the state file records may restore leases", async () => {
  // Found by an adversarial review: after a crash, a fresh session's
  // "restore" of a lease it never held was admitted, and the recorded
  // builder's real restore was then refused as over budget, while its
  // holder still held the units: 4 in use on a budget of 2.
  const dir = await Deno.makeTempDir({ prefix: "sai-state-" });
  const args = ["--resources", "r=2", "--state-file", `${dir}/state.json`];
  try {
    const first = await ServerProc.start(args);
    await using proxy = new FaultProxy(first.port);
    await using builder = await BuilderProc.start(first, { url: proxy.url });
    const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
    const held = uniq("held");
    assert.equal((await runClient(["r", "2", "120", held], env)).code, 0);
    proxy.target = 1;
    first.kill("SIGKILL");
    await first.finished();
    await builder.stderr.wait(/lost the server/);

    await using second = await ServerProc.start(args);
    await second.stderr.wait(/reclaim grace: the last run did not end/);
    for (const session of [`${SESSION}-thief`, undefined]) {
      await using thief = await RawBuilder.connect(second.url, {
        name: "thief",
        ...(session !== undefined && { session }),
      });
      await thief.next((m) => m.welcome !== undefined);
      thief.send({
        resname: "r",
        cookie: "stolen",
        amount: 2,
        lease: 600,
        restore: "lease",
        id: "x.1",
      });
      const refusal = await thief.next((m) => m.cookie === "stolen");
      assert.match(
        String(refusal.error),
        /held no leases before the server restarted.*the lease is lost/,
      );
      thief.send({ restored: true });
      assert.equal((await second.resource("r")).allocated, 0);
    }
    proxy.target = second.port;
    await second.stderr.wait(
      /reclaim grace ended reason=all builders restored/,
    );
    const r = await second.resource("r");
    assert.deepEqual(r.leases.map((l) => l.cookie), [held]);
    assert.equal(r.overBudgetGrants, 0);
    assert.equal(
      (await second.status()).stats.refusals["restore-not-recorded"],
      2,
    );
    assert.equal((await holderPids(held, builder)).length, 1, "still held");
    assert.equal((await runClient(["--release", held], env)).code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("builder connections are capped: silent upgrades evict the oldest, new sessions past --max-builders wait, a resuming one gets in", async () => {
  // Found by an adversarial review: without tokens, connections that said
  // hello (or never did) took every descriptor of a server under a limit
  // of 1024, and no builder could connect for the whole flood.
  await using server = await ServerProc.start([
    "--resources",
    "r=1",
    "--max-builders",
    "2",
  ]);
  const raws: RawBuilder[] = [];
  try {
    // 70 upgrades that never say hello: the oldest 6 are closed (1013).
    for (let i = 0; i < 70; i++) {
      raws.push(await RawBuilder.connect(server.url, false));
    }
    const evicted = await raws[0]!.closed;
    assert.equal(evicted.code, 1013);
    assert.match(evicted.reason, /too many connections waiting to say hello/);
    // A builder says hello at once, and is welcomed despite them.
    const a = await RawBuilder.connect(server.url, {
      name: "a",
      session: `${SESSION}-a`,
    });
    raws.push(a);
    await a.next((m) => m.welcome !== undefined);
    const b = await RawBuilder.connect(server.url, {
      name: "b",
      session: `${SESSION}-b`,
    });
    raws.push(b);
    await b.next((m) => m.welcome !== undefined);
    // A third session waits for room: refused with 1013, try again later.
    const c = await RawBuilder.connect(server.url, {
      name: "c",
      session: `${SESSION}-c`,
    });
    raws.push(c);
    const full = await c.closed;
    assert.equal(full.code, 1013);
    assert.match(full.reason, /too many builders: .*--max-builders 2/);
    // a comes back on a new connection with its session: let in.
    const again = await RawBuilder.connect(server.url, {
      name: "a",
      session: `${SESSION}-a`,
    });
    raws.push(again);
    await again.next((m) => m.welcome !== undefined);
    again.send({ resname: "r", cookie: "x", amount: 1, lease: 30 });
    await again.next((m) => m.cookie === "x" && m.amount === 1);
    assert.deepEqual(
      (await server.status()).builders.map((x) => x.name).sort(),
      ["a", "b"],
    );
  } finally {
    for (const r of raws) r.ws.close();
  }
});

/**
 * HTTP load against a server under a descriptor limit of 1024
 * (`prlimit --pid` once it is listening): idle status readers, event
 * streams and half-open request heads.  The server must survive each, keep
 * admitting builders during it, answer the excess with 503, and answer
 * `/api/status` within a second once the load is gone.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Proc, RawBuilder, ServerProc, waitFor } from "./_harness.ts";
import { parseServerArgs } from "../server.ts";
import {
  DEFAULT_MAX_EVENT_STREAMS,
  DEFAULT_MAX_HTTP_CONNECTIONS,
} from "../src/server/http_admission.ts";

const encoder = new TextEncoder();

/** One raw TCP connection to the server, with what it has received. */
class RawHttp {
  text = "";
  closed = false;
  #conn: Deno.TcpConn;
  #reading: Promise<void>;
  #waiters = new Set<() => void>();

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.#reading = (async () => {
      const buf = new Uint8Array(16 * 1024);
      const dec = new TextDecoder();
      try {
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) break;
          this.text += dec.decode(buf.subarray(0, n), { stream: true });
          this.#wake();
        }
      } catch {
        // Reset, or closed by us.
      }
      this.closed = true;
      this.#wake();
    })();
  }

  static async open(port: number, send = ""): Promise<RawHttp> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const raw = new RawHttp(conn);
    if (send) await raw.send(send);
    return raw;
  }

  async send(text: string): Promise<void> {
    const bytes = encoder.encode(text);
    let at = 0;
    while (at < bytes.length) at += await this.#conn.write(bytes.subarray(at));
  }

  /** The status of the response, once its head is in (0: closed without). */
  async status(deadline: number): Promise<number> {
    await this.#until(() => this.text.includes("\r\n\r\n"), deadline);
    return Number(/^HTTP\/1\.1 (\d{3}) /.exec(this.text)?.[1] ?? 0);
  }

  /** True once the server has closed the connection. */
  async closedByPeer(deadline: number): Promise<boolean> {
    await this.#until(() => false, deadline);
    return this.closed;
  }

  async #until(done: () => boolean, deadline: number): Promise<void> {
    while (!done() && !this.closed) {
      const left = deadline - performance.now();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(t);
          this.#waiters.delete(wake);
          resolve();
        };
        const t = setTimeout(wake, left);
        this.#waiters.add(wake);
      });
    }
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  async close(): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
    await this.#reading;
  }
}

/** Opens `count` connections, `batch` at a time, each sending `send`. */
async function openMany(
  port: number,
  count: number,
  send: string,
): Promise<RawHttp[]> {
  const all: RawHttp[] = [];
  const batch = 100;
  for (let i = 0; i < count; i += batch) {
    all.push(
      ...await Promise.all(
        Array.from(
          { length: Math.min(batch, count - i) },
          () => RawHttp.open(port, send),
        ),
      ),
    );
  }
  return all;
}

async function closeAll(conns: RawHttp[]): Promise<void> {
  await Promise.all(conns.map((c) => c.close()));
}

const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;

/** A server under a descriptor limit of 1024, soft and hard. */
async function limitedServer(args: string[] = []): Promise<ServerProc> {
  const server = await ServerProc.start(["--resources", "r=1", ...args]);
  const out = await new Deno.Command("prlimit", {
    args: ["--pid", String(server.pid), "--nofile=1024:1024"],
    stderr: "piped",
  }).output();
  if (!out.success) {
    await server.stop();
    throw new Error(`prlimit: ${new TextDecoder().decode(out.stderr)}`);
  }
  return server;
}

/** `/api/status` answers 200 within `ms` on a fresh connection. */
async function statusWithin(port: number, ms: number): Promise<number> {
  const conn = await RawHttp.open(port, get("/api/status"));
  try {
    return await conn.status(performance.now() + ms);
  } finally {
    await conn.close();
  }
}

/** A builder connects and gets a lease granted while the load is on. */
async function leaseThroughBuilder(url: string, cookie: string) {
  await using b = await RawBuilder.connect(url, { name: cookie });
  await b.next((m) => m.welcome !== undefined, 5_000);
  b.send({ resname: "r", cookie, amount: 1, lease: 1 });
  const grant = await b.next((m) => m.cookie === cookie, 5_000);
  assert.equal(
    grant.amount,
    1,
    `lease for ${cookie}: ${JSON.stringify(grant)}`,
  );
  b.send({ cookie });
}

/** Prints a figure the test saw (not asserted: a timing is no test). */
function figure(text: string): void {
  // deno-lint-ignore no-console -- the figures are the output here
  console.log(text);
}

/**
 * Once the load is gone, `/api/status` answers 200 within a second: the
 * server may first answer 503 while it sees the load's connections close.
 */
async function assertRecovers(server: ServerProc): Promise<void> {
  const start = performance.now();
  const deadline = start + 1000;
  let status = 0;
  while (status !== 200 && performance.now() < deadline) {
    const conn = await RawHttp.open(server.port, get("/api/status"));
    try {
      status = await conn.status(deadline);
    } finally {
      await conn.close();
    }
  }
  assert.equal(
    status,
    200,
    `/api/status within a second of the load's end; the server said:\n${
      server.stderr.text.slice(-2000)
    }`,
  );
  assert.doesNotMatch(server.stderr.text, /Uncaught|Too many open files/);
  figure(`status after the load: ${(performance.now() - start).toFixed(0)} ms`);
}

Deno.test("1,100 idle status readers: each is answered and closed, the server survives", async () => {
  await using server = await limitedServer();
  const readers = await openMany(server.port, 1100, get("/api/status"));
  try {
    const deadline = performance.now() + 10_000;
    const statuses = await Promise.all(readers.map((r) => r.status(deadline)));
    const count = (s: number) => statuses.filter((x) => x === s).length;
    figure(`idle readers: ${count(200)} × 200, ${count(503)} × 503`);
    assert.equal(count(200) + count(503), 1100, "every reader answered");
    assert.ok(count(200) > 0);
    // The server closes each connection once its response is complete:
    // the readers keep theirs open and read nothing more.
    const closed = await Promise.all(
      readers.map((r) => r.closedByPeer(performance.now() + 5_000)),
    );
    assert.equal(closed.filter((c) => !c).length, 0, "left open by the server");
    await leaseThroughBuilder(server.url, "during-idle-readers");
  } finally {
    await closeAll(readers);
  }
  await assertRecovers(server);
});

Deno.test("400 event streams: the cap's worth stream, the rest get 503 with Retry-After", async () => {
  await using server = await limitedServer();
  const streams = await openMany(server.port, 400, get("/api/events"));
  try {
    const deadline = performance.now() + 10_000;
    const statuses = await Promise.all(streams.map((s) => s.status(deadline)));
    const busy = streams.filter((_, i) => statuses[i] === 503);
    assert.equal(
      statuses.filter((s) => s === 200).length,
      DEFAULT_MAX_EVENT_STREAMS,
    );
    assert.equal(busy.length, 400 - DEFAULT_MAX_EVENT_STREAMS);
    assert.match(busy[0]!.text, /\r\nretry-after: \d+\r\n/i);
    await leaseThroughBuilder(server.url, "during-streams");
    // The builder's lease reached the streams: they are live, not stuck.
    const live = streams.filter((_, i) => statuses[i] === 200);
    await waitFor(
      "the streams to see the lease",
      () => live.every((s) => s.text.includes('"grants":1')),
      5_000,
    );
  } finally {
    await closeAll(streams);
  }
  await assertRecovers(server);
  // The streams' places were given back when their readers went.
  const again = await RawHttp.open(server.port, get("/api/events"));
  try {
    assert.equal(await again.status(performance.now() + 2_000), 200);
  } finally {
    await again.close();
  }
});

Deno.test("1,100 half-open request heads neither starve readers nor stay open", async () => {
  await using server = await limitedServer();
  const heads = await openMany(
    server.port,
    1100,
    "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n",
  );
  try {
    const start = performance.now();
    const answered = await Promise.all(
      Array.from({ length: 30 }, () => statusWithin(server.port, 3_000)),
    );
    figure(
      `30 readers among the heads: ${
        (performance.now() - start).toFixed(0)
      } ms for all`,
    );
    assert.deepEqual(answered, Array(30).fill(200));
    await leaseThroughBuilder(server.url, "during-slowloris");
    // Every half-open head is closed: evicted for a newcomer, or at the
    // head timeout (5 s).
    const deadline = performance.now() + 8_000;
    const closed = await Promise.all(
      heads.map((h) => h.closedByPeer(deadline)),
    );
    assert.equal(closed.filter((c) => !c).length, 0, "heads left open");
  } finally {
    await closeAll(heads);
  }
  await assertRecovers(server);
});

Deno.test("at --max-http-connections a request gets 503, a builder still gets in", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "r=1",
    "--max-http-connections",
    "3",
    "--max-event-streams",
    "3",
  ]);
  const streams = await openMany(server.port, 3, get("/api/events"));
  try {
    const deadline = performance.now() + 5_000;
    for (const s of streams) assert.equal(await s.status(deadline), 200);
    const excess = await RawHttp.open(server.port, get("/api/status"));
    try {
      assert.equal(await excess.status(performance.now() + 5_000), 503);
      assert.match(excess.text, /\r\nretry-after: 1\r\n/i);
      assert.ok(await excess.closedByPeer(performance.now() + 5_000));
    } finally {
      await excess.close();
    }
    await leaseThroughBuilder(server.url, "at-the-cap");
    await server.stderr.wait(/HTTP connections at the limit.*limit=3/);
  } finally {
    await closeAll(streams);
  }
  await assertRecovers(server);
});

Deno.test("--max-http-connections and --max-event-streams are range-checked", async () => {
  const base = ["--resources", "r=1", "--listen", "127.0.0.1:0"];
  const parsed = await parseServerArgs(base);
  assert.equal(parsed.maxHttpConnections, DEFAULT_MAX_HTTP_CONNECTIONS);
  assert.equal(parsed.maxEventStreams, DEFAULT_MAX_EVENT_STREAMS);
  for (
    const [args, message] of [
      [
        ["--max-http-connections", "0"],
        '--max-http-connections must be an integer from 1 to 100000, got "0"',
      ],
      [
        ["--max-http-connections", "100001"],
        '--max-http-connections must be an integer from 1 to 100000, got "100001"',
      ],
      [
        ["--max-event-streams", "x"],
        '--max-event-streams must be an integer from 1 to 128 (--max-http-connections), got "x"',
      ],
      [
        ["--max-http-connections", "10", "--max-event-streams", "11"],
        '--max-event-streams must be an integer from 1 to 10 (--max-http-connections), got "11"',
      ],
    ] as const
  ) {
    await assert.rejects(
      parseServerArgs([...base, ...args]),
      (err: Error) => err instanceof TypeError && err.message === message,
    );
  }
  const out = await new Proc([
    "server.ts",
    ...base,
    "--max-http-connections",
    "0",
  ]).finished();
  assert.equal(out.code, 2);
  assert.match(out.stderr, /--max-http-connections must be an integer from 1/);
  assert.equal(out.stdout, "");
});

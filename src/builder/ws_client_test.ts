import assert from "node:assert/strict";
import { openWebSocket, type WebSocketLike } from "./ws_client.ts";
import { makeCertificates } from "../../tests/_certs.ts";

function echoServer(tls?: { cert: string; key: string }) {
  return Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {}, ...tls },
    (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (ev) => {
        if (ev.data === "bye") socket.close(4000, "asked to");
        else socket.send(`echo:${ev.data}`);
      };
      return response;
    },
  );
}

function events(ws: WebSocketLike) {
  const messages: string[] = [];
  let wake = () => {};
  let error = "";
  const opened = new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = (ev) => {
      error = (ev as ErrorEvent).message;
      reject(new Error(`error event: ${error}`));
    };
  });
  const closed = new Promise<CloseEvent>((resolve) => {
    ws.onclose = (ev) => resolve(ev);
  });
  ws.onmessage = (ev) => {
    messages.push(ev.data);
    wake();
  };
  const next = async () => {
    while (messages.length === 0) {
      await new Promise<void>((r) => wake = r);
    }
    return messages.shift()!;
  };
  return { opened, closed, next, error: () => error };
}

async function withCertificates(
  fn: (pem: { ca: string; cert: string; key: string }) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sai-ws-" });
  try {
    await makeCertificates(dir);
    await fn({
      ca: await Deno.readTextFile(`${dir}/ca.pem`),
      cert: await Deno.readTextFile(`${dir}/cert.pem`),
      key: await Deno.readTextFile(`${dir}/key.pem`),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Sends texts of every frame-length class, several in one turn. */
async function exchange(ws: WebSocketLike): Promise<void> {
  const ev = events(ws);
  await ev.opened;
  for (const size of [5, 125, 126, 200, 65_535, 70_000]) {
    const text = "é".repeat(size >> 1) + "x".repeat(size & 1);
    ws.send(text);
    assert.equal(await ev.next(), `echo:${text}`);
  }
  // Frames of one turn go out in one write, and in order.
  for (let i = 0; i < 50; i++) ws.send(`m${i}`);
  for (let i = 0; i < 50; i++) assert.equal(await ev.next(), `echo:m${i}`);
  ws.close(1000, "done");
  assert.equal((await ev.closed).code, 1000);
  assert.equal(ws.readyState, WebSocket.CLOSED);
}

Deno.test("openWebSocket() exchanges messages of every frame length over ws:", async () => {
  await using server = echoServer();
  await exchange(openWebSocket(`ws://127.0.0.1:${server.addr.port}/`));
});

Deno.test("openWebSocket() exchanges messages over wss: trusting caCerts", async () => {
  await withCertificates(async ({ ca, cert, key }) => {
    await using server = echoServer({ cert, key });
    await exchange(
      openWebSocket(`wss://127.0.0.1:${server.addr.port}/`, { caCerts: [ca] }),
    );
  });
});

Deno.test("openWebSocket() fails over wss: with a certificate nobody vouches for", async () => {
  await withCertificates(async ({ cert, key }) => {
    await using server = echoServer({ cert, key });
    const ws = openWebSocket(`wss://127.0.0.1:${server.addr.port}/`);
    const ev = events(ws);
    await assert.rejects(ev.opened);
    assert.match(ev.error(), /certificate/i);
    assert.equal((await ev.closed).code, 1006);
  });
});

Deno.test("openWebSocket() reports the server's close code and reason", async () => {
  await using server = echoServer();
  const ws = openWebSocket(`ws://127.0.0.1:${server.addr.port}/`);
  const ev = events(ws);
  await ev.opened;
  ws.send("bye");
  const closed = await ev.closed;
  assert.equal(closed.code, 4000);
  assert.equal(closed.reason, "asked to");
});

Deno.test("openWebSocket() fires error then close when nothing listens", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const ws = openWebSocket(`ws://127.0.0.1:${port}/`);
  const ev = events(ws);
  await assert.rejects(ev.opened);
  assert.equal((await ev.closed).code, 1006);
});

Deno.test("openWebSocket() refuses other schemes", () => {
  assert.throws(
    () => openWebSocket("http://127.0.0.1:1/"),
    /scheme must be ws: or wss:/,
  );
});

// --- a scripted server, for what Deno's server never sends ---------------

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

async function acceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-1",
    new TextEncoder().encode(key + GUID),
  );
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

function frame(
  opcode: number,
  payload: Uint8Array,
  options: { fin?: boolean; mask?: number[] } = {},
): Uint8Array {
  const n = payload.length;
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const mask = options.mask;
  const out = new Uint8Array(head + (mask ? 4 : 0) + n);
  out[0] = (options.fin === false ? 0 : 0x80) | opcode;
  const m = mask ? 0x80 : 0;
  if (n < 126) out[1] = m | n;
  else if (n < 65536) {
    out[1] = m | 126;
    out[2] = n >> 8;
    out[3] = n & 0xff;
  } else {
    out[1] = m | 127;
    new DataView(out.buffer).setBigUint64(2, BigInt(n));
  }
  let at = head;
  if (mask) {
    out.set(mask, at);
    at += 4;
  }
  for (let i = 0; i < n; i++) {
    out[at + i] = payload[i]! ^ (mask ? mask[i & 3]! : 0);
  }
  return out;
}

/**
 * Accepts one connection, completes the handshake, writes `bytes` a few
 * bytes at a time (so frames straddle reads), and collects what the client
 * sends back until it closes.
 */
/**
 * Reads a client's upgrade request on `conn` and answers 101 (the client
 * sends nothing more before that answer).
 */
async function acceptUpgrade(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(16384);
  let got = 0;
  let text = "";
  while (!text.includes("\r\n\r\n")) {
    const n = await conn.read(buf.subarray(got));
    if (n === null) throw new Error("client left during the handshake");
    got += n;
    text = new TextDecoder().decode(buf.subarray(0, got));
  }
  const key = /sec-websocket-key: *(\S+)/i.exec(text)![1]!;
  await conn.write(
    new TextEncoder().encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
        `Connection: Upgrade\r\nSec-WebSocket-Accept: ${await acceptKey(
          key,
        )}\r\n\r\n`,
    ),
  );
}

async function scriptedServer(
  bytes: Uint8Array,
  run: (url: string) => Promise<void>,
): Promise<Uint8Array> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    await acceptUpgrade(conn);
    for (let at = 0; at < bytes.length; at += 7) {
      await conn.write(bytes.subarray(at, at + 7));
    }
    const buf = new Uint8Array(1 << 20);
    let got = 0;
    for (;;) {
      const n = await conn.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    conn.close();
    return buf.slice(0, got);
  })();
  await run(`ws://127.0.0.1:${listener.addr.port}/`);
  return await served;
}

Deno.test("openWebSocket() reads fragmented, masked and split frames and answers pings", async () => {
  const enc = new TextEncoder();
  const big = "y".repeat(100_000);
  const script = [
    frame(0x1, enc.encode("hel"), { fin: false }),
    frame(0x9, enc.encode("ping!")),
    frame(0x0, enc.encode("lo"), { fin: false }),
    frame(0x0, enc.encode(" world")),
    frame(0x1, enc.encode("masked"), { mask: [1, 2, 3, 4] }),
    frame(0x1, enc.encode(big)),
    frame(0x8, Uint8Array.of(0x0f, 0xa0, ...enc.encode("bye"))),
  ];
  const all = new Uint8Array(script.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of script) {
    all.set(f, at);
    at += f.length;
  }
  let closeCode = 0;
  const sent = await scriptedServer(all, async (url) => {
    const ws = openWebSocket(url);
    const ev = events(ws);
    await ev.opened;
    assert.equal(await ev.next(), "hello world");
    assert.equal(await ev.next(), "masked");
    assert.equal(await ev.next(), big);
    closeCode = (await ev.closed).code;
  });
  assert.equal(closeCode, 4000);
  // The client's frames: the pong echoing "ping!", then the close echo.
  const unmasked: { opcode: number; payload: Uint8Array }[] = [];
  for (let i = 0; i < sent.length;) {
    const n = sent[i + 1]! & 0x7f;
    assert.ok(n < 126 && (sent[i + 1]! & 0x80) !== 0, "small masked frames");
    const mask = sent.subarray(i + 2, i + 6);
    const payload = sent.slice(i + 6, i + 6 + n).map((b, j) =>
      b ^ mask[j & 3]!
    );
    unmasked.push({ opcode: sent[i]! & 0x0f, payload });
    i += 6 + n;
  }
  // Empty pongs may acknowledge reads that delivered messages (see below).
  const acks = unmasked.filter((f) => f.opcode === 0xa && !f.payload.length);
  const rest = unmasked.filter((f) => !acks.includes(f));
  assert.deepEqual(rest.map((f) => f.opcode), [0xa, 0x8]);
  assert.equal(new TextDecoder().decode(rest[0]!.payload), "ping!");
  assert.deepEqual([...rest[1]!.payload], [0x0f, 0xa0]);
});

Deno.test("openWebSocket() acknowledges a message it does not answer with an empty pong", async (t) => {
  await withCertificates(async (pem) => {
    for (const tls of [false, true]) {
      await t.step(tls ? "wss:" : "ws:", () => ackOnce(tls, pem));
    }
  });
});

/** A scripted server sends one text frame: the first answer is an empty pong. */
async function ackOnce(
  tls: boolean,
  { ca, cert, key }: { ca: string; cert: string; key: string },
): Promise<void> {
  using listener = tls
    ? Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key })
    : Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    try {
      const buf = new Uint8Array(65536);
      await acceptUpgrade(conn);
      await conn.write(frame(0x1, new TextEncoder().encode("grant")));
      let got = 0;
      while (got < 6) {
        const n = await conn.read(buf.subarray(got));
        if (n === null) throw new Error("client left before answering");
        got += n;
      }
      const answer = buf.slice(0, got);
      await conn.write(frame(0x8, Uint8Array.of(0x03, 0xe8)));
      return answer;
    } finally {
      conn.close();
    }
  })();
  const ws = openWebSocket(
    `${tls ? "wss" : "ws"}://127.0.0.1:${listener.addr.port}/`,
    { caCerts: [ca] },
  );
  const ev = events(ws);
  await ev.opened;
  assert.equal(await ev.next(), "grant");
  // Without the pong, the first frame the server reads is this close.
  ws.close();
  const answer = await served;
  // FIN + pong, masked, no payload.
  assert.deepEqual([...answer.subarray(0, 2)], [0x8a, 0x80]);
  await ev.closed;
}

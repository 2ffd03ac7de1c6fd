import assert from "node:assert/strict";
import { openWebSocket, type WebSocketLike } from "./ws_client.ts";

function echoServer() {
  return Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
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
  const opened = new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error("error event"));
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
  return { opened, closed, next };
}

Deno.test("openWebSocket() exchanges messages of every frame length", async () => {
  await using server = echoServer();
  const ws = openWebSocket(`ws://127.0.0.1:${server.addr.port}/`);
  const ev = events(ws);
  await ev.opened;
  for (const size of [5, 200, 70_000]) {
    const text = "x".repeat(size);
    ws.send(text);
    assert.equal(await ev.next(), `echo:${text}`);
  }
  ws.close(1000, "done");
  assert.equal((await ev.closed).code, 1000);
  assert.equal(ws.readyState, WebSocket.CLOSED);
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

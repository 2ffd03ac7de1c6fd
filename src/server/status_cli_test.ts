import assert from "node:assert/strict";
import {
  alignTable,
  fetchFailure,
  formatDuration,
  statusUrl,
} from "./status_cli.ts";

Deno.test("formatDuration() uses the largest two units", () => {
  assert.equal(formatDuration(0), "0 s");
  assert.equal(formatDuration(-5000), "0 s");
  assert.equal(formatDuration(59_400), "59 s");
  assert.equal(formatDuration(61_000), "1 min 1 s");
  assert.equal(formatDuration(3_600_000 + 120_000), "1 h 2 min");
  assert.equal(formatDuration(26 * 3_600_000), "1 d 2 h");
});

Deno.test("alignTable() pads columns and right-aligns the numeric ones", () => {
  assert.equal(
    alignTable(["NAME", "N"], [["a", "10"], ["long-name", "2"]], new Set([1])),
    "NAME        N\na          10\nlong-name   2",
  );
});

Deno.test("statusUrl() accepts ws://, http:// and HOST:PORT", () => {
  assert.equal(
    statusUrl("ws://127.0.0.1:4460").href,
    "http://127.0.0.1:4460/api/status",
  );
  assert.equal(
    statusUrl("https://sai.example/x").href,
    "https://sai.example/api/status",
  );
  assert.equal(statusUrl("h:1").href, "http://h:1/api/status");
  assert.throws(() => statusUrl("http://[bad"), TypeError);
});

Deno.test("fetchFailure() names the cause: refused, TLS, timeout", async () => {
  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = free.addr.port;
  free.close();
  const refused = await fetch(`http://127.0.0.1:${port}/`).catch((e) => e);
  assert.match(fetchFailure(refused), /^connection refused/);

  // An HTTP server asked for TLS.
  await using plain = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("x"),
  );
  const tls = await fetch(`https://127.0.0.1:${plain.addr.port}/`)
    .catch((e) => e);
  assert.match(fetchFailure(tls), /^TLS failed \(.+\); use http:\/\//);

  const timeout = new DOMException("The operation timed out", "TimeoutError");
  assert.equal(fetchFailure(timeout), "no answer within 10 s");
});

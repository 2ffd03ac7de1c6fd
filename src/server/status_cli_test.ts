import assert from "node:assert/strict";
import { alignTable, formatDuration, statusUrl } from "./status_cli.ts";

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

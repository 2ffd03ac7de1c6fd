/**
 * A `sai-server` with a probe, for benchmark 5: samples its own event-loop
 * delay (how late a 10 ms timer fires) and answers `stats` on stdin with one
 * JSON line: RSS, heap and the delay percentiles since the last `reset`.
 *
 * @module
 */

import { percentile } from "./_report.ts";
import { Logger } from "../src/shared/log.ts";
import { backfill } from "../src/allocator/policy.ts";
import { startServer } from "../src/server/server_app.ts";

const budgets = new Map(
  (Deno.args[0] ?? "r=10000").split(",").map((kv) => {
    const [k, v] = kv.split("=");
    return [k!, Number(v)] as [string, number];
  }),
);
const server = await startServer({
  budgets,
  port: 0,
  policy: backfill,
  logger: new Logger("warn"),
});
let delays: number[] = [];
const PERIOD = 10;
let last = performance.now();
const timer = setInterval(() => {
  const now = performance.now();
  delays.push(Math.max(0, now - last - PERIOD));
  last = now;
}, PERIOD);
const out = (line: unknown) =>
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(line) + "\n"));
out({ url: server.url, port: server.port });
const decoder = new TextDecoder();
let pending = "";
for await (const chunk of Deno.stdin.readable) {
  pending += decoder.decode(chunk);
  let nl;
  while ((nl = pending.indexOf("\n")) >= 0) {
    const cmd = pending.slice(0, nl);
    pending = pending.slice(nl + 1);
    if (cmd === "reset") delays = [];
    if (cmd === "stats") {
      const sorted = Float64Array.from(delays).sort();
      const mem = Deno.memoryUsage();
      out({
        rss: mem.rss,
        heapUsed: mem.heapUsed,
        samples: sorted.length,
        p50: percentile(sorted, 0.5),
        p99: percentile(sorted, 0.99),
        max: sorted.at(-1) ?? 0,
        leases: server.allocator.statusOf("r")?.leases.length ?? 0,
      });
    }
  }
}
clearInterval(timer);
await server.shutdown();

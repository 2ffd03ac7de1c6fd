/**
 * Benchmark 5, server scale: 1,000 builders (WebSocket clients in this
 * process) holding 10 leases each, 10,000 in all, on a server in its own
 * process that measures its event-loop delay (`_server_probe.ts`).  Phases:
 * the connect-and-lease storm, then churn (each builder releases a lease
 * and asks for another about once a second).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { TextLineStream } from "./_lines.ts";
import { publish } from "./_report.ts";
import { numberFlag, runBench } from "./_main.ts";

const SCHEMA = "com-warmcat-sai-resource";

interface ProbeStats {
  rss: number;
  heapUsed: number;
  samples: number;
  p50: number;
  p99: number;
  max: number;
  leases: number;
}

/** Runs the benchmark and publishes its table. */
export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean" },
      builders: { type: "string" },
      leases: { type: "string", default: "10" },
      churn: { type: "string" },
    },
  });
  const builders = numberFlag("--builders", values.builders, {
    fallback: values.quick ? 100 : 1000,
    min: 1,
    max: 100_000,
  });
  const perBuilder = numberFlag("--leases", values.leases, {
    fallback: 10,
    min: 1,
    max: 10_000,
  });
  const churnSeconds = numberFlag("--churn", values.churn, {
    fallback: values.quick ? 2 : 10,
    min: 0,
    max: 3600,
    fraction: true,
  });
  const total = builders * perBuilder;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--quiet",
      new URL("./_server_probe.ts", import.meta.url).pathname,
      `r=${total}`,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout
    .pipeThrough(new TextDecoderStream())
    .pipeThrough(new TextLineStream())
    .getReader();
  const writer = child.stdin.getWriter();
  const nextLine = async (): Promise<Record<string, unknown>> => {
    const { value, done } = await lines.read();
    if (done) throw new Error("the server probe exited");
    return JSON.parse(value);
  };
  const ask = async (cmd: string): Promise<ProbeStats> => {
    await writer.write(new TextEncoder().encode(`${cmd}\n`));
    return await nextLine() as unknown as ProbeStats;
  };
  const sockets: WebSocket[] = [];
  try {
    const url = (await nextLine()).url as string;
    const idle = await ask("stats");
    await writer.write(new TextEncoder().encode("reset\n"));
    let granted = 0;
    const { promise: allGranted, resolve } = Promise.withResolvers<void>();
    const t0 = performance.now();
    const cookies: string[][] = [];
    for (let b = 0; b < builders; b++) {
      const ws = new WebSocket(url);
      sockets.push(ws);
      cookies.push([]);
      ws.onmessage = (ev) => {
        if (String(ev.data).includes('"amount"') && ++granted === total) {
          resolve();
        }
      };
      ws.onopen = () => {
        ws.send(JSON.stringify({ schema: SCHEMA, hello: { name: `b${b}` } }));
        for (let i = 0; i < perBuilder; i++) {
          const cookie = `c${b}-${i}`;
          cookies[b]!.push(cookie);
          ws.send(JSON.stringify({
            schema: SCHEMA,
            resname: "r",
            cookie,
            amount: 1,
            lease: 3600,
          }));
        }
      };
    }
    const timeout = setTimeout(() => resolve(), 120_000);
    await allGranted;
    clearTimeout(timeout);
    const rampMs = performance.now() - t0;
    const ramp = await ask("stats");
    await writer.write(new TextEncoder().encode("reset\n"));
    // Churn: each builder gives one lease back and takes another, spread
    // over each second.
    let next = 0;
    const end = performance.now() + churnSeconds * 1000;
    let ops = 0;
    while (performance.now() < end) {
      const tickEnd = performance.now() + 10;
      const per = Math.ceil(builders / 100);
      for (let k = 0; k < per; k++) {
        const b = next++ % builders;
        const ws = sockets[b]!;
        const old = cookies[b]!.shift()!;
        const fresh = `c${b}-${perBuilder + next}`;
        cookies[b]!.push(fresh);
        ws.send(JSON.stringify({ schema: SCHEMA, cookie: old }));
        ws.send(JSON.stringify({
          schema: SCHEMA,
          resname: "r",
          cookie: fresh,
          amount: 1,
          lease: 3600,
        }));
        ops++;
      }
      await new Promise((r) =>
        setTimeout(r, Math.max(0, tickEnd - performance.now()))
      );
    }
    const churn = await ask("stats");
    const MiB = 1024 * 1024;
    await publish({
      name: "server_scale",
      title: `Server scale: ${builders} builders, ${ramp.leases} leases`,
      columns: [
        "RSS MiB",
        "heap MiB",
        "loop delay p50 ms",
        "loop delay p99 ms",
        "loop delay max ms",
      ],
      chartColumn: 0,
      rows: [
        {
          label: "idle",
          values: [idle.rss / MiB, idle.heapUsed / MiB, NaN, NaN, NaN].map(
            (v) => Number.isNaN(v) ? "-" : v,
          ),
        },
        {
          label: `connect + lease storm (${(rampMs / 1000).toFixed(1)} s)`,
          values: [
            ramp.rss / MiB,
            ramp.heapUsed / MiB,
            ramp.p50,
            ramp.p99,
            ramp.max,
          ],
        },
        {
          label: `churn ${(ops / churnSeconds).toFixed(0)} releases+requests/s`,
          values: [
            churn.rss / MiB,
            churn.heapUsed / MiB,
            churn.p50,
            churn.p99,
            churn.max,
          ],
        },
      ],
      notes: [
        "Targets: RSS < 300 MiB, event-loop delay p99 < 20 ms. Delay: how late a 10 ms timer fires in the server process.",
      ],
    });
  } finally {
    for (const ws of sockets) ws.close();
    await writer.close().catch(() => {});
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
    await lines.cancel().catch(() => {});
  }
}

if (import.meta.main) {
  await runBench(
    main,
    "usage: deno run -A -c bench/deno.json bench/server_scale.ts [--quick] [--builders N] [--leases N] [--churn N]",
  );
}

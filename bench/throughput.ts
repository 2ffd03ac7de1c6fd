// deno-lint-ignore-file no-console -- a benchmark: printing is its job
/**
 * Benchmarks 1, 2 and 6: lease throughput and wake latency through a real
 * `sai-server` and `sai-builder` (separate processes), with raw Unix-socket
 * clients speaking the wire protocol, so the service is measured and not
 * process start-up; then the same workloads on `redis-semaphore` against a
 * local `redis-server` that this bench starts and stops.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BuilderProc, ServerProc, waitFor } from "../tests/_harness.ts";
import { percentile, publish, type Row } from "./_report.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Figures of one throughput run. */
export interface Throughput {
  cycles: number;
  perSecond: number;
  p50: number;
  p99: number;
  max: number;
}

/** Figures of one wake-latency run, ms. */
export interface Wake {
  rounds: number;
  p50: number;
  p99: number;
  max: number;
}

function request(resname: string, cookie: string): Uint8Array {
  return encoder.encode(
    `{"schema":"com-warmcat-sai-resource","resname":"${resname}","cookie":"${cookie}","amount":1,"lease":60}`,
  );
}

/** A raw client: one connection, one request; resolves on the grant. */
class Raw {
  conn: Deno.UnixConn;
  #buf = new Uint8Array(2048);
  constructor(conn: Deno.UnixConn) {
    this.conn = conn;
  }
  static async open(path: string): Promise<Raw> {
    return new Raw(await Deno.connect({ transport: "unix", path }));
  }
  async send(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) at += await this.conn.write(bytes.subarray(at));
  }
  async granted(): Promise<void> {
    let text = "";
    for (;;) {
      const n = await this.conn.read(this.#buf);
      if (n === null) throw new Error(`closed before the grant: ${text}`);
      text += decoder.decode(this.#buf.subarray(0, n));
      if (text.includes('"amount"')) return;
      if (text.includes('"error"')) throw new Error(`refused: ${text}`);
    }
  }
  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

function stats(samples: number[]): { p50: number; p99: number; max: number } {
  const s = Float64Array.from(samples).sort();
  return {
    p50: percentile(s, 0.5),
    p99: percentile(s, 0.99),
    max: s.at(-1) ?? NaN,
  };
}

/** Many clients, each: connect, request 1, wait for the grant, close. */
async function loop(
  clients: number,
  seconds: number,
  cycle: (worker: number, i: number) => Promise<number>,
): Promise<Throughput> {
  const latencies: number[] = [];
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, w) => {
      for (let i = 0; performance.now() < end; i++) {
        latencies.push(await cycle(w, i));
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  return {
    cycles: latencies.length,
    perSecond: latencies.length / elapsed,
    ...stats(latencies),
  };
}

/** Benchmark 1 on Sai. */
export async function saiThroughput(
  socket: string,
  options: { clients: number; seconds: number },
): Promise<Throughput> {
  return await loop(options.clients, options.seconds, async (w, i) => {
    const c = await Raw.open(socket);
    try {
      const t = performance.now();
      await c.send(request("r", `t${w}-${i}`));
      await c.granted();
      return performance.now() - t;
    } finally {
      c.close();
    }
  });
}

/** Benchmark 2 on Sai: a holder closes, the queued waiter's grant arrives. */
export async function saiWake(
  server: ServerProc,
  socket: string,
  rounds: number,
): Promise<Wake> {
  const samples: number[] = [];
  let holder = await Raw.open(socket);
  await holder.send(request("w", "w-first"));
  await holder.granted();
  for (let i = 0; i < rounds; i++) {
    const waiter = await Raw.open(socket);
    await waiter.send(request("w", `w${i}`));
    const grant = waiter.granted();
    await waitFor(
      "the waiter to queue",
      async () => (await server.resource("w")).queuedRequests === 1,
    );
    const t = performance.now();
    holder.close();
    await grant;
    samples.push(performance.now() - t);
    holder = waiter;
  }
  holder.close();
  return { rounds, ...stats(samples) };
}

// --- the peer: redis-semaphore on a local redis-server ------------------

/** A redis-server on a free port of 127.0.0.1; null if none is installed. */
async function startRedis(): Promise<
  { port: number; stop: () => Promise<void> } | null
> {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("redis-server", {
      args: [
        "--bind",
        "127.0.0.1",
        "--port",
        String(port),
        "--save",
        "",
        "--appendonly",
        "no",
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
    await Promise.all([child.stdout.cancel(), child.stderr.cancel()]);
  };
  try {
    await waitFor("redis-server to accept connections", async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return true;
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { port, stop };
}

async function redisRuns(
  port: number,
  options: { clients: number; seconds: number; rounds: number; budget: number },
): Promise<{ throughput: Throughput; perConnection: Throughput; wake: Wake }> {
  const { default: Redis } = await import("ioredis");
  const { Semaphore } = await import("redis-semaphore");
  // deno-lint-ignore no-explicit-any
  const redis = new (Redis as any)({ host: "127.0.0.1", port });
  try {
    const opts = { lockTimeout: 60_000, refreshInterval: 0 };
    const throughput = await loop(
      options.clients,
      options.seconds,
      async () => {
        const s = new Semaphore(redis, "r", options.budget, {
          ...opts,
          acquireTimeout: 60_000,
        });
        const t = performance.now();
        await s.acquire();
        const lat = performance.now() - t;
        await s.release();
        return lat;
      },
    );
    // What a test process would do: its own connection for its lease.
    const perConnection = await loop(
      options.clients,
      options.seconds,
      async () => {
        // deno-lint-ignore no-explicit-any
        const own = new (Redis as any)({ host: "127.0.0.1", port });
        try {
          const s = new Semaphore(own, "r2", options.budget, {
            ...opts,
            acquireTimeout: 60_000,
          });
          const t = performance.now();
          await s.acquire();
          const lat = performance.now() - t;
          await s.release();
          return lat;
        } finally {
          own.disconnect();
        }
      },
    );
    const samples: number[] = [];
    let holder = new Semaphore(redis, "w", 1, opts);
    await holder.acquire();
    for (let i = 0; i < options.rounds; i++) {
      const waiter = new Semaphore(redis, "w", 1, {
        ...opts,
        acquireTimeout: 60_000,
      });
      const got = waiter.acquire();
      // Let the waiter fail its first attempt and settle into polling, as
      // a waiter would be: redis-semaphore has no queue to wait on.
      await new Promise((r) => setTimeout(r, 25));
      const t = performance.now();
      await holder.release();
      await got;
      samples.push(performance.now() - t);
      holder = waiter;
    }
    await holder.release();
    return {
      throughput,
      perConnection,
      wake: { rounds: options.rounds, ...stats(samples) },
    };
  } finally {
    redis.disconnect();
  }
}

/** `deno task bench:throughput [--quick] [--seconds S] [--clients N]` */
export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean" },
      seconds: { type: "string" },
      clients: { type: "string", default: "256" },
      rounds: { type: "string" },
    },
  });
  const seconds = Number(values.seconds ?? (values.quick ? 2 : 10));
  const rounds = Number(values.rounds ?? (values.quick ? 50 : 300));
  const clients = Number(values.clients);
  const budget = 32;
  const tputRows: Row[] = [];
  const wakeRows: Row[] = [];
  const notes: string[] = [];
  {
    await using server = await ServerProc.start([
      "--resources",
      `r=${budget},w=1`,
      "--log-level",
      "warn",
    ]);
    await using builder = await BuilderProc.start(server, {
      args: ["--log-level", "warn"],
    });
    const t = await saiThroughput(builder.socket, { clients, seconds });
    tputRows.push({
      label: "sai (server + builder)",
      values: [t.perSecond, t.p50, t.p99, t.max, t.cycles],
    });
    const w = await saiWake(server, builder.socket, rounds);
    wakeRows.push({
      label: "sai (server + builder)",
      values: [w.p50, w.p99, w.max, w.rounds],
    });
  }
  const redis = await startRedis();
  if (redis === null) {
    notes.push("redis-server is not installed: the peer was skipped.");
    console.error("bench: redis-server not found; skipping the peer");
  } else {
    try {
      const r = await redisRuns(redis.port, {
        clients,
        seconds,
        rounds,
        budget,
      });
      const t = r.throughput, w = r.wake;
      tputRows.push({
        label: "redis-semaphore, one shared connection",
        values: [t.perSecond, t.p50, t.p99, t.max, t.cycles],
      });
      const pc = r.perConnection;
      tputRows.push({
        label: "redis-semaphore, a connection per lease",
        values: [pc.perSecond, pc.p50, pc.p99, pc.max, pc.cycles],
      });
      wakeRows.push({
        label: "redis-semaphore (ioredis)",
        values: [w.p50, w.p99, w.max, w.rounds],
      });
      const sai = tputRows[0]!.values[0] as number;
      notes.push(
        `Throughput ratio sai / redis-semaphore: ${
          (sai / t.perSecond).toFixed(2)
        }× against one shared connection, ${
          (sai / pc.perSecond).toFixed(2)
        }× against a connection per lease (target ≥ 3×).`,
      );
    } finally {
      await redis.stop();
    }
  }
  await publish({
    name: "throughput",
    title:
      `Throughput: ${clients} clients, budget ${budget}, request 1 → grant → release, ${seconds} s`,
    columns: [
      "cycles/s",
      "grant p50 ms",
      "grant p99 ms",
      "grant max ms",
      "cycles",
    ],
    rows: tputRows,
    notes,
  });
  await publish({
    name: "wake_latency",
    title: "Wake latency: release → next waiter's grant",
    columns: ["p50 ms", "p99 ms", "max ms", "rounds"],
    rows: wakeRows,
    chartColumn: 1,
    notes: [
      "Target: p99 < 2 ms. redis-semaphore polls every retryInterval (10 ms default).",
    ],
  });
}

if (import.meta.main) await main(Deno.args);

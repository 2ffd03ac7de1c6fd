// deno-lint-ignore-file no-console -- a benchmark: printing is its job
/**
 * Benchmarks 1, 2 and 6: lease throughput and wake latency through a real
 * `sai-server` and `sai-builder` (separate processes), over `ws:` and over
 * `wss:`, with raw Unix-socket clients speaking the wire protocol, so the
 * service is measured and not process start-up; the same load on the
 * protocol's floor (`_floor.ts`: grant everything, nothing else); then the
 * same workloads on `redis-semaphore` against a local `redis-server` that
 * this bench starts and stops.  Every throughput figure is also shown as a
 * fraction of the floor measured in the same run.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { BuilderProc, Lines, ServerProc, waitFor } from "../tests/_harness.ts";
import { makeCertificates } from "../tests/_certs.ts";
import type { StatusDocument } from "../src/server/status_document.ts";
import { percentile, publish, type Row } from "./_report.ts";
import { numberFlag, runBench } from "./_main.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Figures of one throughput run. */
export interface Throughput {
  cycles: number;
  perSecond: number;
  p50: number;
  p99: number;
  max: number;
  /** CPU of this process (the load generator) per cycle, µs. */
  clientCpu: number;
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
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, w) => {
      for (let i = 0; performance.now() < end; i++) {
        latencies.push(await cycle(w, i));
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return {
    cycles: latencies.length,
    perSecond: latencies.length / elapsed,
    ...stats(latencies),
    clientCpu: (cpu.user + cpu.system) / latencies.length,
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

async function withRedis<T>(
  port: number,
  // deno-lint-ignore no-explicit-any
  fn: (redis: any, Redis: any, Semaphore: any) => Promise<T>,
): Promise<T> {
  const { default: Redis } = await import("ioredis");
  const { Semaphore } = await import("redis-semaphore");
  // deno-lint-ignore no-explicit-any
  const redis = new (Redis as any)({ host: "127.0.0.1", port });
  try {
    return await fn(redis, Redis, Semaphore);
  } finally {
    redis.disconnect();
  }
}

const REDIS_OPTIONS = { lockTimeout: 60_000, refreshInterval: 0 };

async function redisThroughput(
  port: number,
  options: { clients: number; seconds: number; budget: number },
): Promise<{ shared: Throughput; perConnection: Throughput }> {
  return await withRedis(port, async (redis, Redis, Semaphore) => {
    const shared = await loop(
      options.clients,
      options.seconds,
      async () => {
        const s = new Semaphore(redis, "r", options.budget, {
          ...REDIS_OPTIONS,
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
        const own = new Redis({ host: "127.0.0.1", port });
        try {
          const s = new Semaphore(own, "r2", options.budget, {
            ...REDIS_OPTIONS,
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
    return { shared, perConnection };
  });
}

async function redisWake(port: number, rounds: number): Promise<Wake> {
  return await withRedis(port, async (redis, _Redis, Semaphore) => {
    const samples: number[] = [];
    let holder = new Semaphore(redis, "w", 1, REDIS_OPTIONS);
    await holder.acquire();
    for (let i = 0; i < rounds; i++) {
      const waiter = new Semaphore(redis, "w", 1, {
        ...REDIS_OPTIONS,
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
    return { rounds, ...stats(samples) };
  });
}

/** CPU seconds (user + system) a process has used so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // Fields after the command name, which is in parentheses: utime is the
  // 14th field of the line and stime the 15th, in clock ticks (USER_HZ).
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** A `sai-server` serving `wss:` with a throwaway certificate. */
class TlsServerProc extends ServerProc {
  client: Deno.HttpClient | undefined;
  ca = "";

  static async startTls(dir: string, args: string[]): Promise<TlsServerProc> {
    await makeCertificates(dir);
    const p = new TlsServerProc([
      "server.ts",
      "--listen",
      "127.0.0.1:0",
      "--cert",
      `${dir}/cert.pem`,
      "--key",
      `${dir}/key.pem`,
      ...args,
    ]);
    try {
      p.ca = `${dir}/ca.pem`;
      p.client = Deno.createHttpClient({
        caCerts: [await Deno.readTextFile(p.ca)],
      });
      const m = await p.stdout.wait(
        /listening on (wss:\/\/127\.0\.0\.1:(\d+))/,
      );
      p.url = m[1]!;
      p.port = Number(m[2]);
    } catch (err) {
      await p.stop();
      throw err;
    }
    return p;
  }

  override async status(): Promise<StatusDocument> {
    const res = await fetch(`https://127.0.0.1:${this.port}/api/status`, {
      ...(this.client && { client: this.client }),
    });
    return await res.json();
  }

  override async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    this.client?.close();
  }
}

/** The floor program on a socket in `dir`. */
async function startFloor(
  dir: string,
): Promise<{ pid: number; socket: string } & AsyncDisposable> {
  const socket = `${dir}/floor.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
      "--quiet",
      new URL("./_floor.ts", import.meta.url).pathname,
      socket,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const stdout = new Lines(child.stdout);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    await child.status;
    await stdout.done;
  };
  try {
    await stdout.wait(/listening/);
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: child.pid, socket, [Symbol.asyncDispose]: stop };
}

const REDIS_SHARED = "redis-semaphore, one shared connection";
const REDIS_PER_LEASE = "redis-semaphore, a connection per lease";

/** One contender's figures in one round. */
interface Sample {
  t: Throughput;
  /** Cycles/s as a percentage of the floor's in the same round. */
  ofFloor: number;
  builderCpu?: number;
  serverCpu?: number;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * `deno run -A -c bench/deno.json bench/throughput.ts [--quick] [--seconds S]
 * [--clients N,M] [--rounds R] [--repeat K]`: with `--repeat`, the
 * contenders of a client count run in K alternating rounds and each row
 * shows the medians (the machine's drift weighs on all of them alike).
 */
export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean" },
      seconds: { type: "string" },
      clients: { type: "string", default: "256,1024" },
      rounds: { type: "string" },
      repeat: { type: "string", default: "1" },
    },
  });
  const repeat = numberFlag("--repeat", values.repeat, {
    fallback: 1,
    min: 1,
    max: 100,
  });
  const seconds = numberFlag("--seconds", values.seconds, {
    fallback: values.quick ? 2 : 10,
    min: 0.1,
    max: 3600,
    fraction: true,
  });
  const rounds = numberFlag("--rounds", values.rounds, {
    fallback: values.quick ? 50 : 300,
    min: 1,
    max: 1e6,
  });
  const clientCounts = values.clients.split(",").map((c) =>
    numberFlag("--clients", c, { fallback: 0, min: 1, max: 10_000 })
  );
  const budget = 32;
  const tputRows: Row[] = [];
  const wakeRows: Row[] = [];
  const notes: string[] = [
    "clients' CPU: this bench process, which runs every client (for redis, ioredis too); builder and server CPU from /proc. On a machine of C cores a row can reach at most C / (the sum of its CPU columns) cycles/s.",
  ];
  const serverArgs = [
    "--resources",
    `r=${budget},w=1`,
    "--log-level",
    "warn",
  ];
  const dir = await Deno.makeTempDir({ prefix: "sai-bench-" });
  const redis = await startRedis();
  if (redis === null) {
    notes.push("redis-server is not installed: the peer was skipped.");
    console.error("bench: redis-server not found; skipping the peer");
  }
  try {
    await using floor = await startFloor(dir);
    await using server = await ServerProc.start(serverArgs);
    await using builder = await BuilderProc.start(server, {
      args: ["--log-level", "warn"],
    });
    await using tlsServer = await TlsServerProc.startTls(dir, serverArgs);
    await using tlsBuilder = await BuilderProc.start(tlsServer, {
      name: "tls",
      args: ["--log-level", "warn", "--ca", tlsServer.ca],
    });
    const sais = [
      { label: "sai over ws:", server, builder },
      { label: "sai over wss:", server: tlsServer, builder: tlsBuilder },
    ];
    // Each client count: every contender back to back, so that the
    // machine's load at the time weighs on all of them alike; with
    // --repeat, in rounds, each row then showing the medians.
    for (const clients of clientCounts) {
      const samples = new Map<string, Sample[]>();
      const add = (label: string, sample: Sample) => {
        const list = samples.get(label) ?? [];
        list.push(sample);
        samples.set(label, list);
      };
      for (let round = 0; round < repeat; round++) {
        const cpu0 = await cpuSeconds(floor.pid);
        const f = await saiThroughput(floor.socket, { clients, seconds });
        const floorCpu = (await cpuSeconds(floor.pid) - cpu0) / f.cycles * 1e6;
        const ofFloor = (t: Throughput) => 100 * t.perSecond / f.perSecond;
        add("floor (grant everything)", {
          t: f,
          ofFloor: 100,
          builderCpu: floorCpu,
        });
        for (const sai of sais) {
          const b0 = await cpuSeconds(sai.builder.pid);
          const s0 = await cpuSeconds(sai.server.pid);
          const t = await saiThroughput(sai.builder.socket, {
            clients,
            seconds,
          });
          add(sai.label, {
            t,
            ofFloor: ofFloor(t),
            builderCpu: (await cpuSeconds(sai.builder.pid) - b0) / t.cycles *
              1e6,
            serverCpu: (await cpuSeconds(sai.server.pid) - s0) / t.cycles *
              1e6,
          });
        }
        if (redis !== null) {
          const r = await redisThroughput(redis.port, {
            clients,
            seconds,
            budget,
          });
          add(REDIS_SHARED, { t: r.shared, ofFloor: ofFloor(r.shared) });
          add(REDIS_PER_LEASE, {
            t: r.perConnection,
            ofFloor: ofFloor(r.perConnection),
          });
        }
      }
      const perSecond = new Map<string, number>();
      for (const [label, list] of samples) {
        const m = (pick: (s: Sample) => number | undefined) => {
          const values = list.map(pick).filter((v) => v !== undefined);
          return values.length === 0 ? undefined : median(values);
        };
        const cpu = (v: number | undefined) =>
          v === undefined ? "-" : v.toFixed(1);
        perSecond.set(label, m((s) => s.t.perSecond)!);
        tputRows.push({
          label: `${label}, ${clients} clients`,
          values: [
            perSecond.get(label)!,
            `${m((s) => s.ofFloor)!.toFixed(0)} %`,
            m((s) => s.t.p50)!,
            m((s) => s.t.p99)!,
            m((s) => s.t.max)!,
            cpu(m((s) => s.t.clientCpu)),
            label === "floor (grant everything)"
              ? `${cpu(m((s) => s.builderCpu))} (floor)`
              : cpu(m((s) => s.builderCpu)),
            cpu(m((s) => s.serverCpu)),
            list.reduce((sum, s) => sum + s.t.cycles, 0),
          ],
        });
      }
      if (redis !== null) {
        const sai = perSecond.get("sai over ws:")!;
        notes.push(
          `${clients} clients: sai over ws: / redis-semaphore ${
            (sai / perSecond.get(REDIS_SHARED)!).toFixed(2)
          }× against one shared connection, ${
            (sai / perSecond.get(REDIS_PER_LEASE)!).toFixed(2)
          }× against a connection per lease.`,
        );
      }
    }
    for (const sai of sais) {
      const w = await saiWake(sai.server, sai.builder.socket, rounds);
      wakeRows.push({
        label: sai.label,
        values: [w.p50, w.p99, w.max, w.rounds],
      });
    }
    if (redis !== null) {
      const w = await redisWake(redis.port, rounds);
      wakeRows.push({
        label: "redis-semaphore (ioredis)",
        values: [w.p50, w.p99, w.max, w.rounds],
      });
    }
  } finally {
    await redis?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  await publish({
    name: "throughput",
    title:
      `Throughput: budget ${budget}, request 1 → grant → release (close), ${seconds} s each` +
      (repeat > 1 ? `, medians of ${repeat} alternating rounds` : ""),
    columns: [
      "cycles/s",
      "of floor",
      "grant p50 ms",
      "grant p99 ms",
      "grant max ms",
      "clients' CPU µs/cycle",
      "builder CPU µs/cycle",
      "server CPU µs/cycle",
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

if (import.meta.main) {
  await runBench(
    main,
    "usage: deno run -A -c bench/deno.json bench/throughput.ts [--quick] [--seconds S] [--clients N,M] [--rounds R] [--repeat K]",
  );
}

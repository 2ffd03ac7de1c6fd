import assert from "node:assert/strict";
import { type HttpServerLike, InnerHttp } from "./inner_http.ts";
import { Logger } from "../shared/log.ts";

/** A stand-in for `Deno.serve`: each server fails when the test says so. */
class FakeServers {
  started: string[] = [];
  /** Attempts to refuse before a start succeeds. */
  refuse = 0;
  #onStart: (() => void) | undefined;
  #fail: ((err: Error) => void)[] = [];
  #stop: (() => void)[] = [];

  serve = (path: string): Promise<HttpServerLike> => {
    if (this.refuse > 0) {
      this.refuse--;
      return Promise.reject(new Error("Too many open files (os error 24)"));
    }
    this.started.push(path);
    this.#onStart?.();
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#fail.push(reject);
    this.#stop.push(resolve);
    return Promise.resolve({
      finished: promise,
      shutdown: () => {
        resolve();
        return promise;
      },
    });
  };

  /** Resolves at the next successful start; rejects after `ms`. */
  nextStart(ms: number): Promise<void> {
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const timer = setTimeout(() => reject(new Error("No fresh server")), ms);
    this.#onStart = () => {
      clearTimeout(timer);
      this.#onStart = undefined;
      resolve();
    };
    return promise;
  }

  /** The latest server's accept fails. */
  fail(): void {
    this.#fail.at(-1)!(new Error("Too many open files (os error 24)"));
  }
}

/** A logger whose lines a test reads, and can wait for. */
function capture() {
  const lines: string[] = [];
  let waiter: { re: RegExp; resolve: () => void } | undefined;
  const log = new Logger("info", {
    write: (line) => {
      lines.push(line);
      if (waiter?.re.test(line)) waiter.resolve();
    },
  });
  /** Resolves at the next line matching `re`; rejects after `ms`. */
  const next = (re: RegExp, ms: number): Promise<void> => {
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const timer = setTimeout(() => reject(new Error(`No line ${re}`)), ms);
    waiter = {
      re,
      resolve: () => {
        clearTimeout(timer);
        waiter = undefined;
        resolve();
      },
    };
    return promise;
  };
  return { log, lines, next };
}

Deno.test("InnerHttp starts a fresh server on a new socket when its server fails, and logs the error", async () => {
  const fake = new FakeServers();
  const { log, lines } = capture();
  const inner = await InnerHttp.start({
    dir: "/nonexistent",
    handler: () => new Response(),
    log,
    serve: fake.serve,
  });
  let finished = false;
  inner.finished.then(() => finished = true);
  try {
    assert.equal(inner.path, "/nonexistent/http-1.sock");
    fake.refuse = 2;
    const started = fake.nextStart(5000);
    fake.fail();
    // After two refused attempts, backing off 10 ms, then 20 ms.
    await started;
    // The start resolved; InnerHttp takes the server in its continuation.
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(fake.started.length, 2);
    assert.equal(inner.path, "/nonexistent/http-4.sock");
    assert.equal(finished, false, "finished only on shutdown");
    assert.match(
      lines.join("\n"),
      /HTTP server failed: starting a fresh one.*Too many open files/,
    );
    assert.equal(
      lines.filter((l) => /Cannot start the HTTP server/.test(l)).length,
      2,
    );
  } finally {
    await inner.shutdown();
  }
  assert.equal(finished, true);
});

Deno.test("InnerHttp.shutdown() ends the retries of a server that cannot start", async () => {
  const fake = new FakeServers();
  const { log, next } = capture();
  const inner = await InnerHttp.start({
    dir: "/nonexistent",
    handler: () => new Response(),
    log,
    serve: fake.serve,
  });
  fake.refuse = Infinity;
  const refused = next(/Cannot start the HTTP server/, 5000);
  fake.fail();
  await refused;
  await inner.shutdown();
  assert.equal(fake.started.length, 1);
});

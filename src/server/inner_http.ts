/**
 * The private HTTP server behind the listener: `Deno.serve` on a Unix
 * socket in a directory of the listener's.  When its accept fails (out of
 * descriptors, EMFILE) `Deno.serve`'s `finished` rejects and it serves no
 * more; this logs the error and starts a fresh one on a new socket, so that
 * nothing on the HTTP side ends `sai-server`.  Until it is back, the
 * listener cannot connect to it and answers 503.
 *
 * @module
 */

import type { Logger } from "../shared/log.ts";

/** What {@linkcode InnerHttp} needs of a running HTTP server. */
export interface HttpServerLike {
  /** Rejects if the server fails. */
  finished: Promise<void>;
  shutdown(): Promise<void>;
}

/** A request handler, as `Deno.serve` takes it. */
export type Handler = (req: Request) => Response | Promise<Response>;

/** Options for {@linkcode InnerHttp.start}. */
export interface InnerHttpOptions {
  /** The directory for the socket, the listener's own. */
  dir: string;
  handler: Handler;
  log: Logger;
  /**
   * Starts a server on the socket `path`; resolves once it listens.
   * Default: `Deno.serve`.
   */
  serve?: (path: string, handler: Handler) => Promise<HttpServerLike>;
}

/** Longest wait between two attempts to start a fresh server, in ms. */
const MAX_BACKOFF_MS = 1000;

/** The inner HTTP server, started again whenever it fails. */
export class InnerHttp {
  #opts: InnerHttpOptions;
  #serve: (path: string, handler: Handler) => Promise<HttpServerLike>;
  #server: HttpServerLike | undefined;
  #path = "";
  /** Sockets named so far: each server gets a fresh one. */
  #sockets = 0;
  #closing = false;
  #wake: (() => void) | undefined;
  #running: Promise<void> = Promise.resolve();

  private constructor(options: InnerHttpOptions) {
    this.#opts = options;
    this.#serve = options.serve ?? denoServe;
  }

  /** Starts the first server; throws if it cannot listen. */
  static async start(options: InnerHttpOptions): Promise<InnerHttp> {
    const inner = new InnerHttp(options);
    const path = inner.#nextPath();
    inner.#server = await inner.#serve(path, options.handler);
    inner.#path = path;
    inner.#running = inner.#supervise();
    return inner;
  }

  /** The socket of the server running now. */
  get path(): string {
    return this.#path;
  }

  /** Resolves once it has stopped: only ever after a shutdown. */
  get finished(): Promise<void> {
    return this.#running;
  }

  /** Stops the server; resolves once it has stopped. */
  async shutdown(): Promise<void> {
    this.#closing = true;
    this.#wake?.();
    await this.#server?.shutdown().catch(() => {});
    await this.#running;
  }

  async #supervise(): Promise<void> {
    for (;;) {
      let error: unknown = "it stopped";
      try {
        await this.#server!.finished;
      } catch (err) {
        error = err;
      }
      if (this.#closing) return;
      this.#opts.log.error("HTTP server failed: starting a fresh one", {
        error: describe(error),
      });
      if (!await this.#restart()) return;
    }
  }

  /** Starts a fresh server, retrying with backoff; false if shut down. */
  async #restart(): Promise<boolean> {
    const old = this.#path;
    let backoffMs = 0;
    for (;;) {
      const path = this.#nextPath();
      try {
        const server = await this.#serve(path, this.#opts.handler);
        if (this.#closing) {
          await server.shutdown().catch(() => {});
          return false;
        }
        this.#server = server;
        this.#path = path;
        await Deno.remove(old).catch(() => {});
        return true;
      } catch (err) {
        backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(10, backoffMs * 2));
        this.#opts.log.error("Cannot start the HTTP server", {
          error: describe(err),
          retry_ms: backoffMs,
        });
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoffMs);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
      if (this.#closing) return false;
    }
  }

  #nextPath(): string {
    return `${this.#opts.dir}/http-${++this.#sockets}.sock`;
  }
}

function denoServe(path: string, handler: Handler): Promise<HttpServerLike> {
  const { promise, resolve } = Promise.withResolvers<void>();
  const server = Deno.serve({ path, onListen: () => resolve() }, handler);
  return promise.then(() => server);
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/**
 * The server's plain HTTP routes, beside the builders' WebSocket on the same
 * listener: the status page and its live event stream, `/api/status`,
 * `/metrics` and the admin API.  The server gives it snapshots and calls
 * {@linkcode HttpRoutes.changed} when something moved.
 *
 * @module
 */

import {
  type AdminTarget,
  handleAdmin,
  isAdminPath,
  jsonError,
} from "./admin.ts";
import type { Logger } from "../shared/log.ts";
import { APP_JS, INDEX_HTML } from "./_web_asset.ts";
import type { StatusDocument } from "./status_document.ts";
import { DEFAULT_MAX_EVENT_STREAMS } from "./http_admission.ts";

/** What the routes need from the server. */
export interface RouteOptions {
  status: () => StatusDocument;
  metrics: () => string;
  admin: AdminTarget;
  /** Undefined: the admin API is disabled. */
  adminToken: string | undefined;
  logger: Logger;
  /** Coalesce pushes to the page within this many ms (default 100). */
  pushIntervalMs?: number;
  /** A comment line keeps idle streams open through proxies (default 15 s). */
  keepAliveMs?: number;
  /**
   * Most event streams open at once (`--max-event-streams`, default
   * {@linkcode DEFAULT_MAX_EVENT_STREAMS}); the excess gets 503.
   */
  maxStreams?: number;
}

const NO_STORE = { "cache-control": "no-store" };

/** The page may load only from this server: no CDN, fonts or beacons. */
const PAGE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "style-src 'unsafe-inline'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/**
 * One page's event stream.  Its backlog is bounded: a reader that does not
 * keep up misses snapshots, and gets the latest one when it reads again.
 */
interface Subscriber {
  controller: ReadableStreamDefaultController<Uint8Array>;
  /** A snapshot was dropped: send a fresh one when the reader pulls. */
  stale: boolean;
}

/** Frames a stream may have queued and unread before it skips snapshots. */
const STREAM_BACKLOG = 2;

/** Serves the HTTP routes and pushes status to the page's event streams. */
export class HttpRoutes {
  #opts: RouteOptions;
  #streams = new Set<Subscriber>();
  #pushTimer: ReturnType<typeof setTimeout> | undefined;
  #keepAlive: ReturnType<typeof setInterval> | undefined;
  #encoder = new TextEncoder();
  #closed = false;

  constructor(options: RouteOptions) {
    this.#opts = options;
  }

  /** Answers one request (not a WebSocket upgrade). */
  async handle(req: Request, addr: string): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname;
    if (isAdminPath(path)) {
      const res = await handleAdmin(req, {
        token: this.#opts.adminToken,
        target: this.#opts.admin,
        addr,
      });
      if (res.status === 401 || res.status === 403) {
        // Never the token itself: only who tried what.
        this.#opts.logger.warn("admin refused", {
          by: addr,
          method: req.method,
          path,
          status: res.status,
        });
      }
      return res;
    }
    const get = req.method === "GET" || req.method === "HEAD";
    const routes: Record<string, () => Response> = {
      "/": () =>
        new Response(INDEX_HTML, {
          headers: {
            "content-type": "text/html; charset=utf-8",
            "content-security-policy": PAGE_CSP,
            ...NO_STORE,
          },
        }),
      "/app.js": () =>
        new Response(APP_JS, {
          headers: {
            "content-type": "text/javascript; charset=utf-8",
            ...NO_STORE,
          },
        }),
      "/api/status": () =>
        Response.json(this.#opts.status(), { headers: NO_STORE }),
      "/api/events": () => this.#events(),
      "/metrics": () =>
        new Response(this.#opts.metrics(), {
          headers: {
            "content-type": "text/plain; version=0.0.4; charset=utf-8",
            ...NO_STORE,
          },
        }),
    };
    const route = routes[path];
    if (!route) return jsonError(404, `Not found: ${path}`);
    if (!get || (req.method === "HEAD" && path === "/api/events")) {
      return jsonError(405, `Method ${req.method} not allowed on ${path}`, {
        allow: "GET, HEAD",
      });
    }
    return route();
  }

  /** Something changed: push a snapshot to the pages soon. */
  changed(): void {
    if (this.#pushTimer !== undefined || this.#streams.size === 0) return;
    if (this.#closed) return;
    this.#pushTimer = setTimeout(() => {
      this.#pushTimer = undefined;
      this.#broadcast(this.#frame(), true);
    }, this.#opts.pushIntervalMs ?? 100);
  }

  /** Ends every event stream, so the listener can shut down. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#pushTimer);
    clearInterval(this.#keepAlive);
    for (const sub of this.#streams) {
      try {
        sub.controller.close();
      } catch { /* closed */ }
    }
    this.#streams.clear();
  }

  #frame(): Uint8Array {
    const json = JSON.stringify(this.#opts.status());
    return this.#encoder.encode(`event: status\ndata: ${json}\n\n`);
  }

  /**
   * Queues a frame on every stream with room for it; a stream without
   * (a slow or stalled reader) is marked stale instead, so no backlog
   * grows.  A snapshot replaces the ones it missed; a keep-alive is
   * simply dropped.
   */
  #broadcast(bytes: Uint8Array, snapshot: boolean): void {
    for (const sub of this.#streams) {
      try {
        if ((sub.controller.desiredSize ?? 0) > 0) {
          sub.controller.enqueue(bytes);
        } else if (snapshot) {
          sub.stale = true;
        }
      } catch {
        this.#streams.delete(sub);
      }
    }
  }

  /** Server-Sent Events: a snapshot now, then one on every change. */
  #events(): Response {
    if (this.#closed) return jsonError(503, "Shutting down");
    const max = this.#opts.maxStreams ?? DEFAULT_MAX_EVENT_STREAMS;
    if (this.#streams.size >= max) {
      this.#opts.logger.debug("event stream refused", { streams: max });
      // The page's EventSource gives up on a 503; the page then retries,
      // backing off from 0.5 s to 5 s.
      return jsonError(503, `Too many event streams (${max}): retry later`, {
        "retry-after": "1",
      });
    }
    let me: Subscriber;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        me = { controller, stale: false };
        this.#streams.add(me);
        // The browser retries after this many ms if the server goes away.
        controller.enqueue(
          this.#encoder.encode(`retry: 1000\n\n`),
        );
        me.stale = true;
        this.#keepAlive ??= setInterval(
          () =>
            this.#broadcast(this.#encoder.encode(": keep-alive\n\n"), false),
          this.#opts.keepAliveMs ?? 15_000,
        );
      },
      pull: (controller) => {
        if (!me.stale) return;
        me.stale = false;
        controller.enqueue(this.#frame());
      },
      cancel: () => {
        this.#streams.delete(me);
        if (this.#streams.size === 0) {
          clearInterval(this.#keepAlive);
          this.#keepAlive = undefined;
        }
      },
    }, new CountQueuingStrategy({ highWaterMark: STREAM_BACKLOG }));
    this.#opts.logger.debug("page subscribed", { streams: this.#streams.size });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        ...NO_STORE,
      },
    });
  }
}

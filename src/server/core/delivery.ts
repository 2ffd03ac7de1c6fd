/**
 * Delivers what the allocator decided: each grant, refusal and expiry is
 * counted, logged and sent to the builder it belongs to (if connected).
 *
 * @module
 */

import type { Outcome } from "../../allocator/allocator.ts";
import type { Log } from "./log.ts";
import { SCHEMA, type ServerMessage } from "../../protocol/protocol.ts";
import type { QueueProgress } from "./progress.ts";
import type { ServerStats, WaitHistogram } from "./stats.ts";

/** What delivery needs from the server. */
export interface DeliveryOptions {
  stats: ServerStats;
  waits: WaitHistogram;
  log: Log;
  progress: QueueProgress;
  /** Sends to the builder that owns a request, if it is connected. */
  send: (owner: string, msg: ServerMessage) => void;
  /** A builder's public id, for logs. */
  pid: (owner: string) => string;
  /** Monotonic milliseconds now. */
  now: () => number;
  /** A monotonic time shown as wall-clock time (epoch ms), by the clocks now. */
  wall: (at: number) => number;
}

/** Counts, logs and sends the allocator's outcomes. */
export class OutcomeDelivery {
  #opts: DeliveryOptions;

  constructor(options: DeliveryOptions) {
    this.#opts = options;
  }

  deliver(outcomes: Outcome[]): void {
    for (const o of outcomes) {
      if (o.type !== "refuse") {
        for (const r of o.resources ?? [o]) {
          this.#opts.progress.touch(r.resname);
        }
      }
      switch (o.type) {
        case "grant":
          this.#opts.progress.forget(o.owner, o.cookie);
          // A restored lease is an old holding re-admitted, not a grant.
          if (o.restored) {
            if (!o.known) this.#opts.stats.restores++;
            this.#opts.log.info("restored", {
              builder: this.#opts.pid(o.owner),
              cookie: o.cookie,
              resname: o.resname,
              amount: o.amount,
              lease: o.lease,
            });
          } else {
            this.#opts.stats.grants++;
            this.#opts.waits.observe(o.waited / 1000);
            // On every grant: the fields are built only when written.
            if (this.#opts.log.enabled("info")) {
              this.#opts.log.info("granted", {
                builder: this.#opts.pid(o.owner),
                cookie: o.cookie,
                resname: o.resname,
                amount: o.amount,
                lease: o.lease,
                waited_ms: o.waited,
              });
            }
          }
          this.#opts.send(o.owner, {
            schema: SCHEMA,
            cookie: o.cookie,
            amount: o.amount,
            resname: o.resname,
            // A grant re-sent for a lease granted earlier (the builder
            // missed it): the seconds it has left, not its full length.
            lease: o.known
              ? Math.max(1, Math.ceil((o.expires - this.#opts.now()) / 1000))
              : o.lease,
            // Shown as wall-clock time: the allocator keeps monotonic time.
            expires: this.#opts.wall(o.expires),
            ...(o.resources && { resources: o.resources }),
            id: o.id,
          });
          break;
        case "refuse":
          this.#opts.stats.refusals[o.reason] =
            (this.#opts.stats.refusals[o.reason] ?? 0) + 1;
          // Queued requests can be refused too (a budget lowered under them).
          this.#opts.progress.forget(o.owner, o.cookie);
          this.#opts.log.info("refused", {
            builder: this.#opts.pid(o.owner),
            cookie: o.cookie,
            reason: o.reason,
            error: o.message,
          });
          this.#opts.send(o.owner, {
            schema: SCHEMA,
            cookie: o.cookie,
            error: o.message,
          });
          break;
        case "expire":
          this.#opts.stats.expiries++;
          this.#opts.log.info("expired", {
            builder: this.#opts.pid(o.owner),
            cookie: o.cookie,
            resname: o.resname,
            amount: o.amount,
          });
          this.#opts.send(o.owner, {
            schema: SCHEMA,
            cookie: o.cookie,
            expired: true,
            id: o.id,
          });
          break;
      }
    }
  }
}

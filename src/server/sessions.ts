/**
 * A builder connection as the server tracks it.
 *
 * @module
 */

import type { ServerWebSocket } from "./ws_server.ts";

/** One builder connection. */
export interface Session {
  /** This connection. */
  id: string;
  /**
   * The builder (its session across reconnects), once it said hello.  A
   * secret between the builder and the server: never shown or logged.
   */
  owner: string | undefined;
  /** The builder's public id, shown in status and logs. */
  publicId: string;
  name: string | undefined;
  /**
   * After a reconnect of a known session: the cookies the server still had
   * for it, until the builder re-sends them; the rest are dropped at its
   * `restored` marker.
   */
  unconfirmed?: Set<string> | undefined;
  socket: ServerWebSocket;
  /** The peer's address (`HOST:PORT`), for logs and a name clash. */
  peer: string;
  connectedAt: number;
  /** When the server last heard from it (any message), by its clock. */
  lastHeard: number;
  /** The session's digest, for the state file (no session: anonymous). */
  digest?: string;
}

/**
 * A builder connection as the server tracks it.
 *
 * @module
 */

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
  socket: WebSocket;
  connectedAt: number;
}

/**
 * A builder connection as the server core tracks it: no socket, only what
 * the protocol decides on.  The shell names each connection
 * ({@linkcode ConnId}) and keeps its socket.
 *
 * @module
 */

import type { HelloMessage } from "../../protocol/protocol.ts";
import type { ConnId } from "./actions.ts";

/** A hello that passed its checks, waiting for the state file. */
export interface AdmittedHello {
  name: string;
  /** The allocator's owner: the session, or a name nobody can send. */
  owner: string;
  /** The session's digest for the state file (no session: anonymous). */
  digest: string;
  /** Whether it counts against `--max-builders` while it waits. */
  counted: boolean;
}

/** One builder connection. */
export interface Conn {
  /** The shell's name for it. */
  readonly id: ConnId;
  /**
   * The builder (its session across reconnects), once it is welcomed.  A
   * secret between the builder and the server: never shown or logged.
   */
  owner: string | undefined;
  /** The builder's public id, shown in status and logs. */
  publicId: string;
  name: string | undefined;
  /**
   * After a reconnect of a known session: the cookies the server still had
   * for it, with their grant ids ("" while queued), until the builder
   * re-sends them; the rest are dropped at its `restored` marker, unless
   * the cookie is another request's by then (the old one ended meanwhile).
   */
  unconfirmed: Map<string, string> | undefined;
  /**
   * From its welcome until its `restored` marker: the cookies granted on
   * this connection.  A request the builder re-sends as waiting while its
   * grant is on the way here crossed it; one granted before this
   * connection may have been lost with the old.
   */
  grantedHere?: Set<string> | undefined;
  /** The peer's address (`HOST:PORT`), for logs and a name clash. */
  readonly peer: string;
  /** When it opened (monotonic ms). */
  readonly connectedAt: number;
  /** When the server last heard from it: any message or frame. */
  lastHeard: number;
  /** The session's digest, for the state file (no session: anonymous). */
  digest: string | undefined;
  /** Until when it may say hello (monotonic ms), while it has not. */
  helloBy: number | undefined;
  /**
   * Its hello waits for the state file to record its session: what it
   * sends meanwhile waits too, in order (a number: a binary frame's size).
   */
  admitted: AdmittedHello | undefined;
  backlog: (string | number)[] | undefined;
  /** Characters (bytes of binary frames) in the backlog. */
  backlogSize: number;
  /** When its liveness (and hello) is checked next (monotonic ms). */
  checkAt: number;
  /**
   * The core closed it (a close action went out): nothing it sends is
   * acted on any more, and nothing is sent to it.
   */
  closing: boolean;
}

/** What a hello carries. */
export type Hello = HelloMessage["hello"];

/**
 * What the server core asks its shell (or the simulator) to do.  Every
 * event returns a list of these, to be carried out in order; none of them
 * calls back into the core synchronously.  {@linkcode LogAction} and
 * {@linkcode WakeAction} are the ones every core shares (core_io.ts).
 *
 * @module
 */

import type { LogAction, WakeAction } from "../../shared/core_io.ts";
import type { ServerState } from "./state.ts";

/**
 * A connection, as the shell names it: any number or string, unique among
 * the connections open at once.
 */
export type ConnId = number | string;

/** Send a message on a connection (one WebSocket text frame). */
export interface SendAction {
  type: "send";
  conn: ConnId;
  text: string;
}

/**
 * Close a connection: a close frame with `code` and `reason`, then the
 * end.  Code 1006 means drop it at once, without a closing handshake: the
 * peer is silent.  The core acts on nothing more from it, and expects
 * `closed(conn)` once it is gone, as for any connection.
 */
export interface CloseAction {
  type: "close";
  conn: ConnId;
  code: number;
  reason: string;
}

/**
 * Ping a connection (a WebSocket ping frame): a builder that has been
 * silent half a heartbeat.  Its pong, like any frame that is not a
 * message, is reported with `heard(conn)`.
 */
export interface PingAction {
  type: "ping";
  conn: ConnId;
}

/**
 * Write the state file: atomically and durably, one write at a time in
 * the order asked, then report with `written(seq, ok, error)`.  The core
 * decides on retries.  The write that `start()` asks for must succeed
 * before the server listens.
 */
export interface WriteAction {
  type: "write";
  seq: number;
  state: ServerState;
}

/** The status moved: push a fresh one to the status page's streams. */
export interface ChangedAction {
  type: "changed";
}

/**
 * Budget changes through the admin API are settled: each ticket up to
 * `upTo` (as the admin calls returned in `persist`) is on disk (`ok`), or
 * could not be written yet (a write failed, or the server is stopping).
 */
export interface PersistedAction {
  type: "persisted";
  upTo: number;
  ok: boolean;
}

/** Anything the server core asks for. */
export type ServerAction =
  | SendAction
  | CloseAction
  | PingAction
  | WriteAction
  | ChangedAction
  | PersistedAction
  | LogAction
  | WakeAction;

/**
 * What the builder's core (`BuilderCore`) asks its shell (or the
 * simulator) to do.  Each event returns them in order; the shell carries
 * them out in that order.
 *
 * @module
 */

import type { LogAction, WakeAction } from "../../shared/core_io.ts";

/**
 * A client connection on the builder's socket, named by the shell: any
 * number, never used twice by one core.
 */
export type ClientId = number;

/**
 * Open a connection to the server (a WebSocket to its URL).  The shell
 * reports `linkOpened()` once it is open, `linkClosed()` when it closes or
 * cannot open, or `linkFailed()` if the attempt cannot even start.  There
 * is at most one connection at a time: the core asks for the next only
 * after the last one was reported closed or it asked to close it.
 */
export interface ConnectAction {
  type: "connect";
}

/** Send a text message on the open connection to the server. */
export interface LinkSendAction {
  type: "linkSend";
  text: string;
}

/**
 * Close the connection to the server (or abandon the attempt under way),
 * with this close code and reason.  From then on the shell reports
 * nothing more about that connection: the core has forgotten it.
 */
export interface LinkCloseAction {
  type: "linkClose";
  code: number;
  reason: string;
}

/**
 * Write `text` and a newline to a client connection, after whatever was
 * written to it before.  With `seq`, report `clientWritten(tick, seq)`
 * once the write is done, or failed (the connection closed): the core
 * waits for that before it gives the lease back (a holder is told its
 * lease ended before its units go to another).
 */
export interface ClientSendAction {
  type: "clientSend";
  id: ClientId;
  text: string;
  seq?: number;
}

/**
 * Close a client connection once what was sent to it before is written
 * (or failed).  The core has forgotten the connection: it ignores what the
 * shell reports about it afterwards, but for `clientWritten()`.
 */
export interface ClientCloseAction {
  type: "clientClose";
  id: ClientId;
}

/** The server welcomed this builder for the first time. */
export interface ConnectedAction {
  type: "connected";
}

/**
 * The server refused this builder for good: another live builder holds
 * its name.  The link has stopped; the program should exit (1) saying
 * `message`.  `other` is that builder's address as the server sees it.
 */
export interface RefusedAction {
  type: "refused";
  other: string;
  message: string;
}

/** Everything `BuilderCore` may ask for. */
export type BuilderAction =
  | ConnectAction
  | LinkSendAction
  | LinkCloseAction
  | ClientSendAction
  | ClientCloseAction
  | ConnectedAction
  | RefusedAction
  | LogAction
  | WakeAction;

/** Why the server closed a link (a WebSocket's close event). */
export interface LinkClose {
  /** The close code (1006 when the connection dropped or never opened). */
  code: number;
  /** The close reason ("" when none). */
  reason: string;
  /** The transport's error, when it failed ("" or absent when none). */
  error?: string;
}

/** The message of the refusal of a hello whose name another builder holds. */
export function nameInUseMessage(
  { name, server, other }: { name: string; server: string; other: string },
): string {
  return `Cannot join the server at "${server}": the name "${name}" is in use by a live builder at ${other}; give this builder another --name`;
}

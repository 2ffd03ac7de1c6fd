/**
 * The Sai resource wire protocol: one type per message, one validator per
 * direction, one encoder.  Everything that crosses a socket is validated here
 * and nowhere else.
 *
 * Compatible with warmcat's Sai: the C `sai-resource` sends one request
 * object (no newline) and reads back whatever the builder forwards; the C
 * builder forwards the client's bytes to the server and the server's bytes
 * back, matching on `"cookie"`.
 *
 * @module
 */

/** The `schema` member every message carries, first. */
export const SCHEMA = "com-warmcat-sai-resource";

/** Largest message accepted on either socket, in bytes. */
export const MAX_MESSAGE_BYTES = 16 * 1024;

/** Resource names: the characters a Sai config may use. */
export const NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

/** Longest cookie accepted, in characters. */
export const MAX_COOKIE_LENGTH = 255;

/**
 * Cookies: 1 to 255 printable ASCII characters other than space, `"` and
 * `\`.  Upstream's CMake macro makes cookies of 100+ characters
 * (`<host>-res_<scope>-<project>-<64 hex>`); the C programs find cookies
 * without JSON unescaping, so quotes and backslashes would not round-trip.
 */
export const COOKIE_PATTERN = /^[!#-[\]-~]{1,255}$/;

/** What {@linkcode COOKIE_PATTERN} accepts, for error messages. */
export const COOKIE_RULE =
  `1 to ${MAX_COOKIE_LENGTH} printable ASCII characters other than space, '"' and '\\'`;

/** Largest amount or lease accepted: fits the C side's `unsigned int`. */
export const MAX_UINT = 0xffff_ffff;

/** Most resources one request may name at once. */
export const MAX_RESOURCES_PER_REQUEST = 16;

/** Priorities accepted: higher goes first, default 0. */
export const MAX_PRIORITY = 1000;

/**
 * The error of a refusal that carried no reason: upstream Sai's server
 * refuses with a bare `{"schema","cookie"}` (no `amount`, no `error`).
 */
export const NO_REASON = "refused by the server (no reason given)";

/** The process a holder keeps a lease for (see {@linkcode RequestMessage}). */
export interface OwnerProcess {
  /** Its PID, as the holder's PID namespace sees it. */
  pid: number;
  /** Its command name (`ctest`), at most 64 printable ASCII characters. */
  name: string;
}

/**
 * A grant's id: unique to one lease, where a cookie may be used again.  The
 * server gives it in the grant; our builder names it in a yield, a restore
 * and the server names it in `expired`, so that nothing about an ended
 * lease can touch a later one under the same cookie.
 */
export const ID_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Largest PID accepted in `process` (Linux's `pid_max` is at most 2²²). */
export const MAX_PID = 2 ** 31 - 1;

/** Why a client gave a lease back, when it says (only ours does). */
export type YieldReason = "owner gone";

/** Every {@linkcode YieldReason}. */
export const YIELD_REASONS: readonly YieldReason[] = ["owner gone"];

/** One resource and amount of a multi-resource request. */
export interface ResourceAmount {
  resname: string;
  amount: number;
}

/**
 * A request for `amount` of `resname` for `lease` seconds.  With
 * `resources` it asks for all of them at once (all or nothing); `resname`
 * and `amount` are then the first entry's, whatever the sender wrote.
 */
export interface RequestMessage {
  schema: typeof SCHEMA;
  resname: string;
  cookie: string;
  amount: number;
  lease: number;
  resources?: ResourceAmount[];
  /** Higher goes first (default 0), never ahead of a queue's head. */
  priority?: number;
  /**
   * Our holder only: the process the lease is held for; the holder gives
   * the lease back when it is gone.  Shown in the status; the C client
   * never sends it.
   */
  process?: OwnerProcess;
  /**
   * Builder to server only, after a reconnect: `"lease"` re-admits a lease
   * the builder's holder still holds (`lease` is then the seconds left);
   * `"queued"` re-sends a request that was waiting.  Never accepted from a
   * client: it would let one bypass the budget.
   */
  restore?: "lease" | "queued";
  /** With `restore: "lease"`: the id of the grant being restored. */
  id?: string;
  /**
   * The client wants `queued` progress messages.  Ours asks; the C client
   * does not, and sees only grants, refusals and `expired`.
   */
  progress?: true;
  /**
   * Client to builder: the client wants {@linkcode LinkMessage}s while it
   * waits.  Ours asks; the C client does not (it would take one for a
   * refusal), nor do our clients from before link messages.  Read only
   * from clients: the server ignores it.
   */
  link?: true;
}

/** Builder to server: are you there?  Answered by a {@linkcode PongMessage}. */
export interface PingMessage {
  schema: typeof SCHEMA;
  ping: number;
}

/** Server to builder: the answer to a ping. */
export interface PongMessage {
  schema: typeof SCHEMA;
  pong: number;
}

/**
 * Server to builder: the hello was accepted; `id` is the builder's public
 * id.  `fence` (seconds): a builder that goes that long without a round
 * trip to the server ends its holders' leases (the server keeps them
 * counted somewhat longer).  `heartbeat` (seconds): the server's; the
 * builder pings at least every half of it, so that the server's last-heard
 * time is never more than that before the builder falls silent.
 */
export interface WelcomeMessage {
  schema: typeof SCHEMA;
  welcome: { id: string; fence?: number; heartbeat?: number };
}

/** Longest fence or heartbeat a welcome may announce, in seconds. */
export const MAX_WELCOME_SECONDS = 86_400;

/**
 * Builder to server, after its restores: everything it still holds or
 * waits for has been re-sent.  Whatever else the server kept for this
 * builder across the reconnect (a yield lost with the old link) is dropped.
 */
export interface RestoredMessage {
  schema: typeof SCHEMA;
  restored: true;
}

/** Gives up a lease, or withdraws a queued request: no `resname`. */
export interface YieldMessage {
  schema: typeof SCHEMA;
  cookie: string;
  /** Why, when the client says (our holder, on its own connection). */
  reason?: YieldReason;
  /**
   * Builder to server: the grant given back; a yield naming another grant
   * than the cookie's live lease is about an ended lease, and is ignored.
   */
  id?: string;
}

/** The server granted the request; `amount` present means success. */
export interface GrantMessage {
  schema: typeof SCHEMA;
  cookie: string;
  amount: number;
  resname: string;
  lease: number;
  /** When the lease ends, in Unix epoch milliseconds (server clock). */
  expires: number;
  /** Every resource granted, for a multi-resource request. */
  resources?: ResourceAmount[];
  /** This grant's id (ours; upstream's server sends none). */
  id?: string;
}

/** The request was refused; no `amount`, as in real Sai. */
export interface RefusalMessage {
  schema: typeof SCHEMA;
  cookie: string;
  error: string;
  /** A granted lease ended by the server (force-release): its id. */
  id?: string;
}

/** The lease ran out; the builder closes the holder's connection. */
export interface ExpiredMessage {
  schema: typeof SCHEMA;
  cookie: string;
  expired: true;
  /** The id of the grant that expired (ours; see {@linkcode ID_PATTERN}). */
  id?: string;
}

/** Where a queued request stands; sent when it changes. */
export interface QueuedMessage {
  schema: typeof SCHEMA;
  cookie: string;
  queued: { position: number; eta: number };
}

/**
 * A release by cookie (`sai-resource --release`) succeeded.  With
 * `expiredAt` (Unix epoch ms, builder clock) the lease had already expired
 * then: whatever it gated ran ungated since.
 */
export interface ReleasedMessage {
  schema: typeof SCHEMA;
  cookie: string;
  released: true;
  expiredAt?: number;
}

/**
 * The builder's link to the server, as a builder tells a client.  `up`:
 * welcomed by the server.  `since`: when it came up or went down (Unix
 * epoch ms, builder clock, for display); before the first welcome, when
 * the builder started.  `error`: while down, the last error, once a
 * connection attempt has failed.
 */
export interface LinkState {
  up: boolean;
  server: string;
  since: number;
  error?: string;
}

/**
 * Builder to client, only to one whose request asked (`"link": true`): the
 * link's state while the request waits, sent when the request arrives
 * while the link is down and on every change after that.  No `amount`,
 * which the C client would read as a refusal: it never gets one.
 */
export interface LinkMessage {
  schema: typeof SCHEMA;
  cookie: string;
  link: LinkState;
}

/** Client to builder: `sai-resource --check`, alone on its connection. */
export interface CheckMessage {
  schema: typeof SCHEMA;
  check: true;
}

/** Builder to client: the answer to a {@linkcode CheckMessage}. */
export interface BuilderStateMessage {
  schema: typeof SCHEMA;
  /** The builder's name (`--name`). */
  builder: string;
  link: LinkState;
}

/**
 * The close reason (code 1008) of a hello refused because another live
 * builder holds its name; the other's address follows.
 */
export const NAME_IN_USE = "name in use by a live builder at ";

/** The builder's first frame on the WebSocket. */
export interface HelloMessage {
  schema: typeof SCHEMA;
  hello: {
    name: string;
    /** Identifies one builder process across reconnects. */
    session?: string;
    token?: string;
  };
}

/** What a `sai-resource` (ours or the C one) may send to a builder. */
export type ClientMessage = RequestMessage | YieldMessage | CheckMessage;

/** What a builder may send to the server. */
export type BuilderMessage =
  | HelloMessage
  | RequestMessage
  | YieldMessage
  | PingMessage
  | RestoredMessage;

/**
 * What the server may send to a builder, and the builder pass on to a
 * client.
 */
export type ServerMessage =
  | GrantMessage
  | RefusalMessage
  | ExpiredMessage
  | QueuedMessage
  | ReleasedMessage
  | PongMessage
  | WelcomeMessage;

/** What a builder may send to a client: the server's, and its own. */
export type BuilderReply = ServerMessage | LinkMessage | BuilderStateMessage;

/**
 * Thrown for a message that does not follow the protocol.  `cookie` is set
 * when the message named one we could read, so the refusal can carry it.
 */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  cookie: string | undefined;
  constructor(message: string, options?: { cookie?: string | undefined }) {
    super(message);
    this.cookie = options?.cookie;
  }
}

type Json = Record<string, unknown>;

function parseObject(text: string): Json {
  if (text.length > MAX_MESSAGE_BYTES) {
    throw new ProtocolError(
      `Cannot parse message: longer than ${MAX_MESSAGE_BYTES} bytes`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ProtocolError("Cannot parse message: not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError("Cannot parse message: not a JSON object");
  }
  const obj = value as Json;
  if (obj.schema !== SCHEMA) {
    throw new ProtocolError(
      `Cannot parse message: "schema" must be "${SCHEMA}", got ${
        describe(obj.schema)
      }`,
      { cookie: readableCookie(obj) },
    );
  }
  return obj;
}

function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  // JSON has no Infinity: 1e400 parses to it, and would print as null.
  if (typeof value === "number" && !Number.isFinite(value)) {
    return "a number out of range";
  }
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

function readableCookie(obj: Json): string | undefined {
  return typeof obj.cookie === "string" && COOKIE_PATTERN.test(obj.cookie)
    ? obj.cookie
    : undefined;
}

function cookieOf(obj: Json): string {
  if (typeof obj.cookie !== "string" || !COOKIE_PATTERN.test(obj.cookie)) {
    throw new ProtocolError(
      `Cannot parse message: "cookie" must be ${COOKIE_RULE}, got ${
        describe(obj.cookie)
      }`,
    );
  }
  return obj.cookie;
}

function positiveInt(obj: Json, key: string, cookie: string): number {
  const value = obj[key];
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < 1 ||
    value > MAX_UINT
  ) {
    throw new ProtocolError(
      `Cannot parse request: "${key}" must be a positive integer, got ${
        describe(value)
      }`,
      { cookie },
    );
  }
  return value;
}

function resourceName(value: unknown, cookie: string): string {
  if (typeof value !== "string" || !NAME_PATTERN.test(value)) {
    throw new ProtocolError(
      `Cannot parse request: "resname" must match ${NAME_PATTERN.source}, got ${
        describe(value)
      }`,
      { cookie },
    );
  }
  return value;
}

function resourceList(value: unknown, cookie: string): ResourceAmount[] {
  if (
    !Array.isArray(value) || value.length === 0 ||
    value.length > MAX_RESOURCES_PER_REQUEST
  ) {
    throw new ProtocolError(
      `Cannot parse request: "resources" must be a list of 1 to ${MAX_RESOURCES_PER_REQUEST} {"resname","amount"} objects, got ${
        describe(value)
      }`,
      { cookie },
    );
  }
  const seen = new Set<string>();
  return value.map((item) => {
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      throw new ProtocolError(
        `Cannot parse request: each of "resources" must be an object, got ${
          describe(item)
        }`,
        { cookie },
      );
    }
    const resname = resourceName((item as Json).resname, cookie);
    if (seen.has(resname)) {
      throw new ProtocolError(
        `Cannot parse request: "resources" names "${resname}" twice`,
        { cookie },
      );
    }
    seen.add(resname);
    return { resname, amount: positiveInt(item as Json, "amount", cookie) };
  });
}

function yieldReason(value: unknown, cookie: string): YieldReason {
  if (!YIELD_REASONS.includes(value as YieldReason)) {
    throw new ProtocolError(
      `Cannot parse yield: "reason" must be one of ${
        YIELD_REASONS.map((r) => `"${r}"`).join(", ")
      }, got ${describe(value)}`,
      { cookie },
    );
  }
  return value as YieldReason;
}

function ownerProcess(value: unknown, cookie: string): OwnerProcess {
  const p = value as Json;
  if (
    typeof p !== "object" || p === null || Array.isArray(p) ||
    typeof p.pid !== "number" || !Number.isInteger(p.pid) || p.pid < 1 ||
    p.pid > MAX_PID || typeof p.name !== "string" ||
    !/^[ -~]{1,64}$/.test(p.name)
  ) {
    throw new ProtocolError(
      `Cannot parse request: "process" must be {"pid": a positive integer, "name": 1 to 64 printable ASCII characters}, got ${
        describe(value)
      }`,
      { cookie },
    );
  }
  return { pid: p.pid, name: p.name };
}

function requestOrYield(
  obj: Json,
  fromBuilder: boolean,
): RequestMessage | YieldMessage {
  const cookie = cookieOf(obj);
  if (obj.resname === undefined && obj.resources === undefined) {
    const out: YieldMessage = { schema: SCHEMA, cookie };
    if (obj.reason !== undefined) out.reason = yieldReason(obj.reason, cookie);
    // A client's id is not read: only a builder names grants.
    if (fromBuilder && obj.id !== undefined) out.id = grantId(obj.id, cookie);
    return out;
  }
  if (
    obj.restore !== undefined &&
    !(fromBuilder && (obj.restore === "lease" || obj.restore === "queued"))
  ) {
    throw new ProtocolError(
      fromBuilder
        ? `Cannot parse request: "restore" must be "lease" or "queued", got ${
          describe(obj.restore)
        }`
        : 'Cannot parse request: "restore" is only accepted from a builder',
      { cookie },
    );
  }
  let priority: number | undefined;
  if (obj.priority !== undefined) {
    const p = obj.priority;
    if (
      typeof p !== "number" || !Number.isInteger(p) ||
      Math.abs(p) > MAX_PRIORITY
    ) {
      throw new ProtocolError(
        `Cannot parse request: "priority" must be an integer from -${MAX_PRIORITY} to ${MAX_PRIORITY}, got ${
          describe(p)
        }`,
        { cookie },
      );
    }
    priority = p;
  }
  if (obj.progress !== undefined && typeof obj.progress !== "boolean") {
    throw new ProtocolError(
      `Cannot parse request: "progress" must be true or false, got ${
        describe(obj.progress)
      }`,
      { cookie },
    );
  }
  const lease = positiveInt(obj, "lease", cookie);
  let out: RequestMessage;
  if (obj.resources !== undefined) {
    const resources = resourceList(obj.resources, cookie);
    const first = resources[0]!;
    out = {
      schema: SCHEMA,
      resname: first.resname,
      cookie,
      amount: first.amount,
      lease,
      resources,
    };
  } else {
    out = {
      schema: SCHEMA,
      resname: resourceName(obj.resname, cookie),
      cookie,
      amount: positiveInt(obj, "amount", cookie),
      lease,
    };
  }
  // Assigned, not spread: this runs for every request on both sides.
  if (priority !== undefined) out.priority = priority;
  if (obj.process !== undefined) {
    out.process = ownerProcess(obj.process, cookie);
  }
  if (obj.progress === true) out.progress = true;
  // Only a client asks for link messages: the builder answers it.
  if (!fromBuilder && obj.link !== undefined) {
    if (typeof obj.link !== "boolean") {
      throw new ProtocolError(
        `Cannot parse request: "link" must be true or false, got ${
          describe(obj.link)
        }`,
        { cookie },
      );
    }
    if (obj.link) out.link = true;
  }
  if (obj.restore !== undefined) {
    out.restore = obj.restore as "lease" | "queued";
  }
  if (obj.restore === "lease" && obj.id !== undefined) {
    out.id = grantId(obj.id, cookie);
  }
  return out;
}

function grantId(value: unknown, cookie: string): string {
  if (typeof value !== "string" || !ID_PATTERN.test(value)) {
    throw new ProtocolError(
      `Cannot parse message: "id" must match ${ID_PATTERN.source}, got ${
        describe(value)
      }`,
      { cookie },
    );
  }
  return value;
}

/** The id a server message names, if it names a valid one. */
function idOf(obj: Json): { id?: string } {
  return typeof obj.id === "string" && ID_PATTERN.test(obj.id)
    ? { id: obj.id }
    : {};
}

/** Validates one message from a `sai-resource` client. */
export function parseClientMessage(text: string): ClientMessage {
  const obj = parseObject(text);
  if (obj.check !== undefined) {
    if (
      obj.check !== true || obj.cookie !== undefined ||
      obj.resname !== undefined || obj.resources !== undefined
    ) {
      throw new ProtocolError(
        'Cannot parse check: it must be {"schema","check":true}, with no cookie or resource',
        { cookie: readableCookie(obj) },
      );
    }
    return { schema: SCHEMA, check: true };
  }
  return requestOrYield(obj, false);
}

/** The members that say which kind a builder's message is. */
const BUILDER_KINDS = ["hello", "ping", "restored", "cookie"] as const;

/** Validates one message from a builder, on the server. */
export function parseBuilderMessage(text: string): BuilderMessage {
  const obj = parseObject(text);
  // One kind per message: a request that also carries a "hello" or a
  // "ping" (an upstream builder forwards a client's text as it is) is
  // refused, never taken for the other kind.
  // Counted without an array: this runs for every builder message.
  let kinds = 0;
  for (const k of BUILDER_KINDS) if (obj[k] !== undefined) kinds++;
  if (kinds > 1) {
    const both = BUILDER_KINDS.filter((k) => obj[k] !== undefined);
    throw new ProtocolError(
      `Cannot parse message: it has both ${
        both.map((k) => `"${k}"`).join(" and ")
      }; one kind of message at a time`,
      { cookie: readableCookie(obj) },
    );
  }
  if (obj.ping !== undefined) {
    if (typeof obj.ping !== "number" || !Number.isSafeInteger(obj.ping)) {
      throw new ProtocolError('Cannot parse ping: "ping" must be an integer');
    }
    return { schema: SCHEMA, ping: obj.ping };
  }
  if (obj.hello !== undefined) return parseHello(obj.hello);
  if (obj.restored === true) return { schema: SCHEMA, restored: true };
  return requestOrYield(obj, true);
}

function parseHello(value: unknown): HelloMessage {
  const hello = value as Json;
  if (
    typeof hello !== "object" || hello === null ||
    typeof hello.name !== "string" || !NAME_PATTERN.test(hello.name)
  ) {
    throw new ProtocolError(
      `Cannot parse hello: "name" must match ${NAME_PATTERN.source}`,
    );
  }
  const out: HelloMessage = { schema: SCHEMA, hello: { name: hello.name } };
  if (hello.session !== undefined) {
    if (
      typeof hello.session !== "string" || !COOKIE_PATTERN.test(hello.session)
    ) {
      throw new ProtocolError(
        `Cannot parse hello: "session" must be ${COOKIE_RULE}`,
      );
    }
    out.hello.session = hello.session;
  }
  if (hello.token !== undefined) {
    if (typeof hello.token !== "string" || hello.token.length > 1024) {
      throw new ProtocolError(
        'Cannot parse hello: "token" must be a string of at most 1024 characters',
      );
    }
    out.hello.token = hello.token;
  }
  return out;
}

/** Longest `server` or `error` a link state may carry, in characters. */
const MAX_LINK_TEXT = 1024;

function linkState(value: unknown): LinkState {
  const l = value as Json;
  const text = (v: unknown): v is string =>
    typeof v === "string" && v.length <= MAX_LINK_TEXT;
  if (
    typeof l !== "object" || l === null || Array.isArray(l) ||
    typeof l.up !== "boolean" || !text(l.server) ||
    typeof l.since !== "number" || !Number.isSafeInteger(l.since) ||
    (l.error !== undefined && !text(l.error))
  ) {
    throw new ProtocolError(
      `Cannot parse link state: it must be {"up","server","since"[,"error"]}, got ${
        describe(value)
      }`,
    );
  }
  return {
    up: l.up,
    server: l.server,
    since: l.since,
    ...(l.error !== undefined && { error: l.error as string }),
  };
}

/**
 * Validates one message from a builder, on a client: what the server sent
 * through it, or the builder's own link state.
 */
export function parseBuilderReply(text: string): BuilderReply {
  const obj = parseObject(text);
  if (obj.link !== undefined) {
    // Never taken for a refusal (no `amount`): it is ours, not the server's.
    const link = linkState(obj.link);
    if (obj.builder !== undefined) {
      if (typeof obj.builder !== "string" || !NAME_PATTERN.test(obj.builder)) {
        throw new ProtocolError(
          `Cannot parse builder state: "builder" must match ${NAME_PATTERN.source}`,
        );
      }
      return { schema: SCHEMA, builder: obj.builder, link };
    }
    return { schema: SCHEMA, cookie: cookieOf(obj), link };
  }
  return serverMessage(obj);
}

/** Validates one message from the server, on a builder. */
export function parseServerMessage(text: string): ServerMessage {
  return serverMessage(parseObject(text));
}

function serverMessage(obj: Json): ServerMessage {
  if (typeof obj.pong === "number") return { schema: SCHEMA, pong: obj.pong };
  if (typeof obj.welcome === "object" && obj.welcome !== null) {
    const { id, fence, heartbeat } = obj.welcome as Json;
    // Out of range is ignored: a timer past setTimeout's limit fires at once.
    const seconds = (v: unknown): v is number =>
      typeof v === "number" && v > 0 && v <= MAX_WELCOME_SECONDS;
    return {
      schema: SCHEMA,
      welcome: {
        id: typeof id === "string" ? id : "",
        ...(seconds(fence) && { fence }),
        ...(seconds(heartbeat) && { heartbeat }),
      },
    };
  }
  if (obj.cookie === "" && typeof obj.error === "string") {
    // An error about a message whose cookie could not be read.
    return { schema: SCHEMA, cookie: "", error: obj.error };
  }
  const cookie = cookieOf(obj);
  if (obj.expired === true) {
    return { schema: SCHEMA, cookie, expired: true, ...idOf(obj) };
  }
  if (obj.released === true) {
    return {
      schema: SCHEMA,
      cookie,
      released: true,
      ...(typeof obj.expiredAt === "number" &&
        Number.isSafeInteger(obj.expiredAt) && { expiredAt: obj.expiredAt }),
    };
  }
  if (typeof obj.amount === "number") {
    const grant: GrantMessage = {
      schema: SCHEMA,
      cookie,
      amount: positiveInt(obj, "amount", cookie),
      resname: typeof obj.resname === "string" ? obj.resname : "",
      lease: typeof obj.lease === "number" ? obj.lease : 0,
      expires: typeof obj.expires === "number" ? obj.expires : 0,
    };
    if (obj.resources !== undefined) {
      grant.resources = resourceList(obj.resources, cookie);
    }
    if (typeof obj.id === "string" && ID_PATTERN.test(obj.id)) {
      grant.id = obj.id;
    }
    return grant;
  }
  if (typeof obj.queued === "object" && obj.queued !== null) {
    const q = obj.queued as Json;
    if (typeof q.position === "number" && typeof q.eta === "number") {
      return {
        schema: SCHEMA,
        cookie,
        queued: { position: q.position, eta: q.eta },
      };
    }
  }
  // Real Sai: no amount means refused, with or without a reason.
  return {
    schema: SCHEMA,
    cookie,
    error: typeof obj.error === "string" && obj.error !== ""
      ? obj.error
      : NO_REASON,
    ...idOf(obj),
  };
}

/** Whether a server message is a grant (real Sai: it has an `amount`). */
export function isGrant(msg: ServerMessage): msg is GrantMessage {
  return "amount" in msg;
}

/** Whether a server message is a refusal. */
export function isRefusal(msg: ServerMessage): msg is RefusalMessage {
  return "error" in msg;
}

/** Whether a client message is a check (`sai-resource --check`). */
export function isCheck(msg: ClientMessage): msg is CheckMessage {
  return "check" in msg;
}

/** Whether a client or builder message is a request (it names a resource). */
export function isRequest(
  msg: ClientMessage | BuilderMessage,
): msg is RequestMessage {
  return "resname" in msg;
}

/** Whether a builder message is a ping. */
export function isPing(msg: BuilderMessage): msg is PingMessage {
  return "ping" in msg;
}

/** Whether a builder message ends its restore after a reconnect. */
export function isRestored(msg: BuilderMessage): msg is RestoredMessage {
  return "restored" in msg;
}

/** Whether a builder message is the hello. */
export function isHello(msg: BuilderMessage): msg is HelloMessage {
  return "hello" in msg;
}

/** Serialises a message with `schema` first, as real Sai writes it. */
export function encode(
  msg:
    | BuilderReply
    | BuilderMessage
    | CheckMessage
    | Omit<RequestMessage, "schema">,
): string {
  // Callers build messages schema first: then there is nothing to copy.
  for (const key in msg) {
    if (key === "schema" && (msg as { schema?: string }).schema === SCHEMA) {
      return JSON.stringify(msg);
    }
    break;
  }
  const { schema: _schema, ...rest } = msg as { schema?: string };
  return JSON.stringify({ schema: SCHEMA, ...rest });
}

/**
 * The admin API: bearer-token checks, request validation and the HTTP
 * answers for operator actions.  What an action does is up to the
 * {@linkcode AdminTarget} (the server), so this module stays free of
 * allocator and socket details.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { MAX_BUDGET } from "./budgets.ts";
import {
  type Actor,
  applyBudgets,
  type BudgetChange,
  type BudgetTarget,
  type ClearResult,
  type ForceReleaseResult,
  type RemoveResult,
} from "./core/admin_rules.ts";
import { COOKIE_PATTERN, NAME_PATTERN } from "../protocol/protocol.ts";

export {
  type Actor,
  applyBudgets,
  type BudgetChange,
  type BudgetTarget,
  type ClearResult,
  type ForceReleaseResult,
  type RemoveResult,
};

/**
 * What the admin API acts on: the server.  Budgets set and resources
 * removed through it override the config until cleared.
 */
export interface AdminTarget extends BudgetTarget {
  /** Drops an override: the config's budget applies again. */
  clearOverride(name: string, by: Actor): ClearResult;
  forceRelease(builder: string, cookie: string, by: Actor): ForceReleaseResult;
  /**
   * Resolves once the last budget change is kept in the state file: true,
   * or false if it cannot be (no state file, a write failed and is retried).
   */
  persisted(): Promise<boolean>;
}

/** An error answer: JSON `{"error": message}`. */
export function jsonError(
  status: number,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return Response.json({ error: message }, { status, headers });
}

function digest(text: string): Uint8Array {
  return createHash("sha256").update(text).digest();
}

/**
 * Whether `header` is `Bearer <token>`.  Both sides are hashed first so the
 * comparison takes the same time whatever the length or content.
 */
export function bearerMatches(header: string | null, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  const given = m?.[1] ?? "";
  const equal = timingSafeEqual(digest(given), digest(token));
  return m !== null && equal;
}

/** Reads a token file: its first line, trimmed; throws `TypeError` if empty. */
export function parseTokenFile(text: string, path: string): string {
  const token = text.split("\n")[0]!.trim();
  if (!/^\S{8,}$/.test(token)) {
    throw new TypeError(
      `Cannot use admin token file "${path}": the first line must be at least 8 non-space characters`,
    );
  }
  return token;
}

const OPERATOR_PATTERN = /^[A-Za-z0-9_.@-]{1,64}$/;

/** Largest admin request body read, in bytes. */
const MAX_BODY_BYTES = 4096;

/**
 * Reads a body of at most `limit` bytes, counting as it reads: a chunked
 * body declares no length, so the limit is enforced on what arrives.
 */
export async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
): Promise<string> {
  const tooLarge = () =>
    new RangeError(`Cannot parse body: larger than ${limit} bytes`);
  if (body === null) return "";
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new TextDecoder().decode(all);
}

async function readBudget(req: Request): Promise<number> {
  const declared = Number(req.headers.get("content-length") ?? 0);
  if (declared > MAX_BODY_BYTES) {
    await req.body?.cancel();
    throw new RangeError(
      `Cannot parse body: larger than ${MAX_BODY_BYTES} bytes`,
    );
  }
  const text = await readLimited(req.body, MAX_BODY_BYTES);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new SyntaxError('Cannot parse body: expected JSON {"budget": N}');
  }
  const budget = (body as { budget?: unknown } | null)?.budget;
  if (
    typeof budget !== "number" || !Number.isSafeInteger(budget) ||
    budget < 0 || budget > MAX_BUDGET
  ) {
    throw new RangeError(
      `Cannot set budget: "budget" must be an integer from 0 to ${MAX_BUDGET}, got ${
        JSON.stringify(budget) ?? "nothing"
      }`,
    );
  }
  return budget;
}

/** Routes under `/api/resources/` and `/api/leases/`; undefined if none. */
export function isAdminPath(pathname: string): boolean {
  return pathname.startsWith("/api/resources/") ||
    pathname.startsWith("/api/leases/");
}

/**
 * Answers an admin request.  `token` undefined means the API is disabled
 * (403); a missing or wrong bearer token is 401 / 403.
 */
export async function handleAdmin(
  req: Request,
  options: { token: string | undefined; target: AdminTarget; addr: string },
): Promise<Response> {
  const { token, target } = options;
  if (token === undefined) {
    return jsonError(
      403,
      "The admin API is disabled: start sai-server with --admin-token",
    );
  }
  const auth = req.headers.get("authorization");
  if (auth === null) {
    return jsonError(401, "Missing Authorization: Bearer TOKEN", {
      "www-authenticate": 'Bearer realm="sai-server"',
    });
  }
  if (!bearerMatches(auth, token)) {
    return jsonError(403, "Wrong admin token");
  }
  const operator = req.headers.get("x-sai-operator") ?? undefined;
  if (operator !== undefined && !OPERATOR_PATTERN.test(operator)) {
    return jsonError(
      400,
      `X-Sai-Operator must match ${OPERATOR_PATTERN.source}, got "${operator}"`,
    );
  }
  const by: Actor = {
    addr: options.addr,
    ...(operator !== undefined && { operator }),
  };
  const parts = new URL(req.url).pathname.split("/").slice(1)
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return "\0";
      }
    });
  // ["api", "resources", NAME (, "override")] or
  // ["api", "leases", BUILDER, COOKIE]
  if (
    parts[1] === "resources" &&
    (parts.length === 3 || (parts.length === 4 && parts[3] === "override"))
  ) {
    const name = parts[2]!;
    if (!NAME_PATTERN.test(name)) {
      return jsonError(
        400,
        `Resource name must match ${NAME_PATTERN.source}, got "${name}"`,
      );
    }
    if (parts.length === 4) {
      if (req.method !== "DELETE") {
        return jsonError(405, `Method ${req.method} not allowed here`, {
          allow: "DELETE",
        });
      }
      const r = target.clearOverride(name, by);
      if (r.result === "none") {
        return jsonError(
          404,
          `No budget set through the admin API for "${name}": its budget is the config's`,
        );
      }
      return Response.json({ ...r, persisted: await target.persisted() });
    }
    if (req.method === "POST" || req.method === "PUT") {
      let budget: number;
      try {
        budget = await readBudget(req);
      } catch (err) {
        return jsonError(400, (err as Error).message);
      }
      const change = target.setBudget(name, budget, by);
      return Response.json({ ...change, persisted: await target.persisted() });
    }
    if (req.method === "DELETE") {
      const r = target.removeResource(name, by);
      if (r.result === "unknown") {
        return jsonError(404, `No resource "${name}"`);
      }
      if (r.result === "busy") {
        return jsonError(
          409,
          `Cannot remove "${name}": ${r.leases} lease(s) are live; set its budget to 0 to drain it, or force-release them`,
        );
      }
      return Response.json({
        resource: name,
        ...r,
        persisted: await target.persisted(),
      });
    }
    return jsonError(405, `Method ${req.method} not allowed here`, {
      allow: "POST, PUT, DELETE",
    });
  }
  if (parts[1] === "leases" && parts.length === 4) {
    const [, , builder, cookie] = parts as [string, string, string, string];
    if (!COOKIE_PATTERN.test(cookie)) {
      return jsonError(400, `Not a valid cookie: "${cookie}"`);
    }
    if (req.method !== "DELETE") {
      return jsonError(405, `Method ${req.method} not allowed here`, {
        allow: "DELETE",
      });
    }
    const r = target.forceRelease(builder, cookie, by);
    switch (r.result) {
      case "released":
        return Response.json({ cookie, ...r });
      case "unknown-builder":
        return jsonError(404, `No connected builder "${builder}"`);
      case "ambiguous-builder":
        return jsonError(
          409,
          `Several builders match "${builder}" by id or name: use the id of the one you mean (${
            r.ids.join(", ")
          })`,
        );
      case "no-lease":
        return jsonError(
          404,
          `Builder "${builder}" holds no lease with cookie "${cookie}"`,
        );
    }
  }
  return jsonError(404, "No such admin endpoint");
}

/**
 * Builder authentication: the server's token file and a constant-time check.
 *
 * @module
 */

import { timingSafeEqual } from "node:crypto";
import { NAME_PATTERN } from "../protocol/protocol.ts";

/** One accepted token, optionally bound to one builder name. */
export interface TokenEntry {
  name?: string;
  digest: Uint8Array;
}

async function digest(token: string): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token)),
  );
}

/**
 * Parses a `--builder-tokens` file: one `token` or `name:token` a line;
 * blank lines and `#` comments are skipped.  Throws `SyntaxError` on a bad
 * line, naming the line but never the token.
 */
export async function parseTokenFile(text: string): Promise<TokenEntry[]> {
  const entries: TokenEntry[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    const colon = line.indexOf(":");
    const name = colon >= 0 ? line.slice(0, colon) : undefined;
    const token = colon >= 0 ? line.slice(colon + 1) : line;
    if (name !== undefined && !NAME_PATTERN.test(name)) {
      throw new SyntaxError(
        `Cannot parse the token file: line ${i + 1} has a bad builder name`,
      );
    }
    if (token.length < 16) {
      throw new SyntaxError(
        `Cannot parse the token file: the token on line ${
          i + 1
        } is shorter than 16 characters`,
      );
    }
    entries.push({
      ...(name !== undefined && { name }),
      digest: await digest(token),
    });
  }
  if (entries.length === 0) {
    throw new SyntaxError("Cannot parse the token file: it has no tokens");
  }
  return entries;
}

/**
 * Whether `token` is accepted for builder `name`: a token bound to that
 * name, or a shared one unless some token is bound to it.  Compares SHA-256
 * digests in constant time, and checks every entry so the time does not
 * depend on which one matched.
 */
export async function verifyToken(
  entries: TokenEntry[],
  name: string,
  token: string | undefined,
): Promise<boolean> {
  if (token === undefined) return false;
  const d = await digest(token);
  // A name bound to a token is reserved: a shared token cannot log in as it.
  const reserved = entries.some((e) => e.name === name);
  let ok = false;
  for (const e of entries) {
    const match = timingSafeEqual(d, e.digest);
    if (match && (e.name === name || (e.name === undefined && !reserved))) {
      ok = true;
    }
  }
  return ok;
}

/** Whether a listen address only accepts connections from this machine. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" ||
    /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/**
 * Builder authentication, the shell's part: the server's token file, and
 * the SHA-256 the core is given (the core checks tokens: `core/tokens.ts`).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { NAME_PATTERN } from "../protocol/protocol.ts";
import type { TokenDigest } from "./core/tokens.ts";

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

/** The digests of token entries as the core checks them (hex). */
export function tokenDigests(entries: readonly TokenEntry[]): TokenDigest[] {
  return entries.map((e) => ({
    ...(e.name !== undefined && { name: e.name }),
    digest: toHex(e.digest),
  }));
}

/** SHA-256 of a text, as lowercase hex: the core's injected hash. */
export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

function toHex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Whether a listen address only accepts connections from this machine. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" ||
    /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

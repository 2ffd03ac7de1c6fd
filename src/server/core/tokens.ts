/**
 * Builder authentication, as the core checks it: a hello's token against
 * the digests of the accepted ones (`--builder-tokens`, parsed by the
 * shell's `auth.ts`), in constant time.  The SHA-256 is the shell's,
 * injected: the core has no crypto of its own.
 *
 * @module
 */

/** One accepted token: its SHA-256 (hex), and the name it is bound to. */
export interface TokenDigest {
  name?: string;
  digest: string;
}

/** SHA-256 of a text, as lowercase hex (the shell's `node:crypto`). */
export type Hash = (text: string) => string;

/**
 * Whether `token` is accepted for builder `name`: a token bound to that
 * name, or a shared one unless some token is bound to it.  Compares SHA-256
 * digests in constant time, and checks every entry so the time does not
 * depend on which one matched.
 */
export function verifyToken(
  entries: readonly TokenDigest[],
  name: string,
  token: string | undefined,
  hash: Hash,
): boolean {
  if (token === undefined) return false;
  const d = hash(token);
  // A name bound to a token is reserved: a shared token cannot log in as it.
  const reserved = entries.some((e) => e.name === name);
  let ok = false;
  for (const e of entries) {
    const match = equalDigests(d, e.digest);
    if (match && (e.name === name || (e.name === undefined && !reserved))) {
      ok = true;
    }
  }
  return ok;
}

/** Compares two digests of one length in time that depends on neither. */
function equalDigests(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

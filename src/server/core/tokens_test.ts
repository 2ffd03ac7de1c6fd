import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { parseTokenFile } from "../auth.ts";
import { type TokenDigest, verifyToken } from "./tokens.ts";

const BOUND = "bound-token-0123456789";
const SHARED = "shared-token-9876543210";

const sha256 = (text: string) =>
  createHash("sha256").update(text).digest("hex");

Deno.test("verifyToken() reserves a name bound to a token: a shared token cannot take it", async () => {
  const entries: TokenDigest[] = (await parseTokenFile(
    `ci1:${BOUND}\n${SHARED}\n`,
  )).map((e) => ({
    ...(e.name !== undefined && { name: e.name }),
    digest: [...e.digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
  }));
  const verify = (name: string, token: string | undefined) =>
    verifyToken(entries, name, token, sha256);
  assert.equal(verify("ci1", BOUND), true);
  assert.equal(verify("ci1", SHARED), false);
  assert.equal(verify("ci2", SHARED), true);
  assert.equal(verify("ci2", BOUND), false);
  assert.equal(verify("ci1", undefined), false);
  assert.equal(verify("ci2", "not-a-token-at-all"), false);
});

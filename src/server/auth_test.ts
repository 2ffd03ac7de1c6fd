import assert from "node:assert/strict";
import { parseTokenFile, verifyToken } from "./auth.ts";

const BOUND = "bound-token-0123456789";
const SHARED = "shared-token-9876543210";

Deno.test("verifyToken() reserves a name bound to a token: a shared token cannot take it", async () => {
  const entries = await parseTokenFile(`ci1:${BOUND}\n${SHARED}\n`);
  assert.equal(await verifyToken(entries, "ci1", BOUND), true);
  assert.equal(await verifyToken(entries, "ci1", SHARED), false);
  assert.equal(await verifyToken(entries, "ci2", SHARED), true);
  assert.equal(await verifyToken(entries, "ci2", BOUND), false);
  assert.equal(await verifyToken(entries, "ci1", undefined), false);
});

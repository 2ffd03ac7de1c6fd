import assert from "node:assert/strict";
import { startErrorMessage } from "./listen_error.ts";

Deno.test("startErrorMessage() names the address already in use", () => {
  let taken: unknown;
  const first = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    Deno.listen({ hostname: "127.0.0.1", port: first.addr.port }).close();
  } catch (err) {
    taken = err;
  } finally {
    first.close();
  }
  assert.equal(
    startErrorMessage(taken, "/run/sai/b1.sock"),
    'Cannot listen on "/run/sai/b1.sock": address already in use',
  );
  assert.equal(startErrorMessage(new Error("other"), "x"), "other");
});

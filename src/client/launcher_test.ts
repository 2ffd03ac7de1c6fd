import assert from "node:assert/strict";
import { signalExitCode } from "./launcher.ts";

Deno.test("signalExitCode() reports signals as a shell does", () => {
  assert.equal(signalExitCode("SIGHUP"), 129);
  assert.equal(signalExitCode("SIGINT"), 130);
  assert.equal(signalExitCode("SIGTERM"), 143);
});

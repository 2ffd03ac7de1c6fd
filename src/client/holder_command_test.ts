import assert from "node:assert/strict";
import { holderCommand } from "./holder.ts";
import { parseCommand } from "./client_args.ts";
import { PROGRAMS } from "../shared/permissions.ts";

const args = ["r", "1", "30", "ck", "--socket", "/s.sock", "--wait", "5"];
const env = { get: () => undefined };

Deno.test("holderCommand() re-runs the compiled binary itself with --holder", () => {
  const cmd = holderCommand(args, { standalone: true, denoFlags: ["--x"] });
  // No `run`, no script, no Deno flags: the binary's first argument is ours.
  assert.deepEqual(cmd, { exe: Deno.execPath(), args: ["--holder", ...args] });
  const parsed = parseCommand(cmd.args, env);
  assert.equal(parsed.kind === "acquire" && parsed.holder, true);
});

Deno.test("holderCommand() from source runs client.ts with the binary's permissions", () => {
  const cmd = holderCommand(args, { standalone: false });
  assert.equal(cmd.exe, Deno.execPath());
  const script = cmd.args.indexOf(
    new URL("../../client.ts", import.meta.url).href,
  );
  assert.ok(script > 0, cmd.args.join(" "));
  assert.equal(cmd.args[0], "run");
  const flags = cmd.args.slice(1, script);
  const permissions = flags.filter((f) => /^(--allow-|-A$)/.test(f));
  assert.deepEqual(permissions, [...PROGRAMS["sai-resource"].permissions]);
  assert.deepEqual(cmd.args.slice(script + 1), ["--holder", ...args]);
});

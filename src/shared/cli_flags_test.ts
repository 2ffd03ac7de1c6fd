import assert from "node:assert/strict";
import { parseFlags, wantsHelp } from "./cli_flags.ts";

const options = {
  wait: { type: "string" },
  quiet: { type: "boolean" },
} as const;

function parse(args: string[]) {
  return parseFlags({ args, options, strict: true, allowPositionals: true });
}

Deno.test("parseFlags() reads a negative number as an argument or a value", () => {
  const { values, positionals } = parse(["r", "-1", "--wait", "-2.5", "-0"]);
  assert.deepEqual(positionals, ["r", "-1", "-0"]);
  assert.equal(values.wait, "-2.5");
});

Deno.test("parseFlags() says what is wrong without node:util's advice", () => {
  const cases: [string[], string][] = [
    [["--bogus"], 'unknown option "--bogus"'],
    [["-x"], 'unknown option "-x"'],
    [["--wait"], "--wait needs a value"],
    [
      ["--wait", "--quiet"],
      '--wait needs a value; write --wait=VALUE for one that starts with "-"',
    ],
    [["--quiet=yes"], "--quiet takes no value"],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parse(args), { name: "TypeError", message });
  }
  assert.throws(
    () => parseFlags({ args: ["extra"], options, strict: true }),
    { name: "TypeError", message: 'unexpected argument "extra"' },
  );
});

Deno.test("wantsHelp() sees -h and --help as flags, not as a flag's value", () => {
  assert.equal(wantsHelp(["-h"]), true);
  assert.equal(wantsHelp(["--bogus", "--help"], options), true);
  assert.equal(wantsHelp(["--wait", "-h"], options), false);
  assert.equal(wantsHelp(["r", "1", "--", "-h"], options), false);
  assert.equal(wantsHelp(["r", "1"], options), false);
});

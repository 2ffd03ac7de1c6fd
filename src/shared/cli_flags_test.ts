import assert from "node:assert/strict";
import { intInRange, parseFlags, wantsHelp } from "./cli_flags.ts";

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

Deno.test("intInRange() takes decimal integers from min to max and names the range", () => {
  const range = { min: 1, max: 10 };
  assert.equal(intInRange("--n", "1", range), 1);
  assert.equal(intInRange("--n", "10", range), 10);
  assert.equal(intInRange("--n", "0", { min: 0, max: 1 }), 0);
  for (const bad of ["0", "11", "", "x", "1.5", "01", "+2", "1e1", " 3"]) {
    assert.throws(
      () => intInRange("--n", bad, range),
      new TypeError(`--n must be an integer from 1 to 10, got "${bad}"`),
    );
  }
  assert.throws(
    () => intInRange("--n", "11", { ...range, maxFrom: "--m" }),
    new TypeError('--n must be an integer from 1 to 10 (--m), got "11"'),
  );
});

import assert from "node:assert/strict";
import { parseBudgets, resourcesFromConfig } from "./budgets.ts";

Deno.test("parseBudgets() reads a comma-separated list", () => {
  assert.deepEqual(
    [...parseBudgets("warmcat_conns=32, db.main=4,x-y=0")],
    [["warmcat_conns", 32], ["db.main", 4], ["x-y", 0]],
  );
});

Deno.test("parseBudgets() rejects empty lists, duplicates, bad names and bad budgets", () => {
  const cases: [string, RegExp][] = [
    ["", /the list is empty/],
    ["a=1,a=2", /"a" is given twice/],
    ["a", /expected NAME=BUDGET, got "a"/],
    ["a=-1", /budget of "a" must be an integer/],
    ["a=1.5", /budget of "a" must be an integer/],
    ["a=", /budget of "a" must be an integer/],
    ["bad name=1", /name must match/],
    ["a=1,,b=2", /expected NAME=BUDGET/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseBudgets(text), re, text);
  }
});

Deno.test("resourcesFromConfig() finds the com-warmcat-sai resources option", () => {
  const vhost = {
    name: "libwebsockets.org",
    "ws-protocols": [{ "other": {} }, {
      "com-warmcat-sai": { resources: "warmcat_conns=32" },
    }],
  };
  assert.equal(resourcesFromConfig(JSON.stringify(vhost)), "warmcat_conns=32");
  assert.equal(
    resourcesFromConfig(JSON.stringify({ vhosts: [vhost] })),
    "warmcat_conns=32",
  );
  assert.equal(resourcesFromConfig("{}"), undefined);
  assert.throws(() => resourcesFromConfig("{"), /not valid JSON/);
});

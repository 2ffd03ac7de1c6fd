import assert from "node:assert/strict";
import {
  budgetsFromConfig,
  parseBudgets,
  resourcesFromConfig,
  stripComments,
} from "./budgets.ts";

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

Deno.test("resourcesFromConfig() reads lwsws-style # comments, never inside strings", () => {
  const text = `# a vhost of sai-server
{
  "vhosts": [{ # the only one
    "name": "a#b", "note": "say \\"#\\" here",
    "ws-protocols": [{ "com-warmcat-sai": { "resources": "r=2" } }]
  }]
}
`;
  assert.equal(resourcesFromConfig(text), "r=2");
  assert.equal(
    stripComments('{"a": "x#y"} # gone\n'),
    '{"a": "x#y"} \n',
  );
  assert.equal(stripComments('"\\\\" # gone'), '"\\\\" ');
});

Deno.test("budgetsFromConfig() names the path it expects when there are no budgets", () => {
  for (
    const text of [
      '{"resources": "warmcat_conns=4"}',
      '{"vhosts": [{"ws-protocols": [{"com-warmcat-sai": {}}]}]}',
      "{}",
    ]
  ) {
    assert.throws(
      () => budgetsFromConfig(text),
      (err: Error) =>
        err instanceof SyntaxError &&
        err.message.includes(
          'expected "resources" at .vhosts[]."ws-protocols"[]."com-warmcat-sai".resources',
        ),
      text,
    );
  }
  assert.throws(
    () =>
      budgetsFromConfig(
        '{"ws-protocols":[{"com-warmcat-sai":{"resources":4}}]}',
      ),
    /\.resources must be a string such as "warmcat_conns=4", got 4/,
  );
  assert.deepEqual(
    [
      ...budgetsFromConfig(
        '{"ws-protocols":[{"com-warmcat-sai":{"resources":"a=1,b=0"}}]}',
      ),
    ],
    [["a", 1], ["b", 0]],
  );
});

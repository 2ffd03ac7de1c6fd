import assert from "node:assert/strict";
import { BudgetSources } from "./budget_sources.ts";

const config = (o: Record<string, number>) => new Map(Object.entries(o));

Deno.test("BudgetSources.effective() applies overrides over the config, which keep through a new config", () => {
  const s = new BudgetSources(config({ a: 1, b: 2, c: 3 }));
  assert.deepEqual([...s.effective()], [["a", 1], ["b", 2], ["c", 3]]);
  s.override("b", 20);
  s.override("extra", 5);
  s.removed("c");
  assert.deepEqual([...s.effective()], [["a", 1], ["b", 20], ["extra", 5]]);
  assert.equal(s.source("b"), "admin");
  assert.equal(s.source("c"), "admin");
  assert.equal(s.source("a"), "config");
  assert.equal(s.configBudget("b"), 2);
  assert.equal(s.configBudget("extra"), null);

  // SIGHUP with a config that changes b and c and adds d: the overrides win.
  s.setConfig(config({ a: 7, b: 8, c: 9, d: 4 }));
  assert.deepEqual(
    [...s.effective()],
    [["a", 7], ["b", 20], ["d", 4], ["extra", 5]],
  );
  assert.equal(s.configBudget("b"), 8);

  // Cleared, the config's budget is back.
  assert.equal(s.clear("b"), 20);
  assert.equal(s.clear("c"), null);
  assert.equal(s.clear("c"), undefined);
  assert.deepEqual(
    [...s.effective()],
    [["a", 7], ["b", 8], ["c", 9], ["d", 4], ["extra", 5]],
  );
});

Deno.test("BudgetSources.removed() overrides only what the config names", () => {
  const s = new BudgetSources(config({ a: 1 }));
  s.override("x", 3);
  s.removed("x");
  assert.equal(s.overrides.has("x"), false, "nothing left to override");
  s.removed("a");
  assert.deepEqual([...s.overrides], [["a", null]]);
  assert.deepEqual([...s.effective()], []);
});

Deno.test("BudgetSources.toRecord() keeps a resource named __proto__ as a name", () => {
  const s = new BudgetSources(config({}));
  s.override("__proto__", 3);
  s.override("b", null);
  const record = s.toRecord();
  assert.equal(JSON.stringify(record), '{"__proto__":3,"b":null}');
  assert.deepEqual(Object.entries(record), [["__proto__", 3], ["b", null]]);
});

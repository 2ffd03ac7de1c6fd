import assert from "node:assert/strict";
import { distanceWithin, knownNames, MAX_NAMES_LISTED } from "./known_names.ts";

Deno.test("`distanceWithin()` is the edit distance up to max, max + 1 beyond", () => {
  assert.equal(distanceWithin("warmcat_conns", "warmcat_conns", 2), 0);
  assert.equal(distanceWithin("warmcat_con", "warmcat_conns", 2), 2);
  assert.equal(distanceWithin("wramcat_conns", "warmcat_conns", 2), 2);
  assert.equal(distanceWithin("warmcat-conns", "warmcat_conns", 2), 1);
  assert.equal(distanceWithin("db", "warmcat_conns", 2), 3);
  assert.equal(distanceWithin("abcd", "wxyz", 2), 3);
  assert.equal(distanceWithin("", "ab", 2), 2);
});

Deno.test("`knownNames()` lists the nearest names first, then the others in configured order", () => {
  assert.equal(
    knownNames("warmcat_con", ["db", "mirror", "warmcat_conns"]),
    'known: "warmcat_conns", "db", "mirror"',
  );
  // Case does not count as a difference.
  assert.equal(
    knownNames("DB", ["mirror", "db"]),
    'known: "db", "mirror"',
  );
  assert.equal(knownNames("r", []), "no resources are configured");
});

Deno.test("`knownNames()` lists at most 8 names however many there are", () => {
  const many = Array.from({ length: 10_000 }, (_, i) => `res${i}`);
  const text = knownNames("res9999x", many);
  const listed = [...text.matchAll(/"([^"]+)"/g)].map((m) => m[1]);
  assert.equal(listed.length, MAX_NAMES_LISTED);
  // The nearest first: res9999 (1 away), then res999x-like ones 2 away.
  assert.equal(listed[0], "res9999");
  assert.match(text, / and 9992 more$/);
  assert.ok(text.length < 200, text);
});

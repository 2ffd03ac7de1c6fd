import assert from "node:assert/strict";
import { JsonObjectSplitter } from "./json_splitter.ts";

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("JsonObjectSplitter.push() yields an object sent without a newline", () => {
  const s = new JsonObjectSplitter();
  assert.deepEqual(s.push(enc('{"a":1}')), ['{"a":1}']);
  assert.equal(s.partial, false);
});

Deno.test("JsonObjectSplitter.push() joins an object split across reads, byte by byte", () => {
  const s = new JsonObjectSplitter();
  const text = '{"a":"x}y{\\"z","b":{"c":[1,2]},"d":"é"}';
  const out: string[] = [];
  for (const byte of enc(text)) out.push(...s.push(new Uint8Array([byte])));
  assert.deepEqual(out, [text]);
  assert.deepEqual(JSON.parse(out[0]!).a, 'x}y{"z');
});

Deno.test("JsonObjectSplitter.push() splits several objects in one read, with or without newlines", () => {
  const s = new JsonObjectSplitter();
  assert.deepEqual(s.push(enc('{"a":1}{"b":2}\n{"c"')), ['{"a":1}', '{"b":2}']);
  assert.equal(s.partial, true);
  assert.deepEqual(s.push(enc(":3}\r\n")), ['{"c":3}']);
});

Deno.test("JsonObjectSplitter.push() rejects bytes outside an object", () => {
  assert.throws(
    () => new JsonObjectSplitter().push(enc("hello")),
    /expected a JSON object/,
  );
  assert.throws(
    () => new JsonObjectSplitter().push(enc('{"a":1}]')),
    /expected a JSON object/,
  );
});

Deno.test("JsonObjectSplitter.push() rejects an object over the size limit, even in pieces", () => {
  const s = new JsonObjectSplitter({ maxBytes: 10 });
  assert.deepEqual(s.push(enc('{"a":')), []);
  assert.throws(() => s.push(enc('"123456"}')), /longer than 10 bytes/);
  assert.throws(
    () =>
      new JsonObjectSplitter({ maxBytes: 10 }).push(enc("{" + " ".repeat(20))),
    /longer than 10/,
  );
  // Whole in one chunk, as it usually arrives.
  assert.throws(
    () => new JsonObjectSplitter({ maxBytes: 10 }).push(enc('{"a":"1234567"}')),
    /longer than 10 bytes/,
  );
  assert.deepEqual(
    new JsonObjectSplitter({ maxBytes: 10 }).push(enc('{"a":"12"}')),
    ['{"a":"12"}'],
  );
});

import assert from "node:assert/strict";
import {
  encode,
  parseBuilderMessage,
  parseBuilderReply,
  parseClientMessage,
  parseServerMessage,
  ProtocolError,
  SCHEMA,
} from "./protocol.ts";

Deno.test("parseClientMessage() reads the C client's request", () => {
  const msg = parseClientMessage(
    '{"schema":"com-warmcat-sai-resource","resname":"warmcat_conns","cookie":"abc","amount":8,"lease":20}',
  );
  assert.deepEqual(msg, {
    schema: SCHEMA,
    resname: "warmcat_conns",
    cookie: "abc",
    amount: 8,
    lease: 20,
  });
});

Deno.test("parseClientMessage() reads a yield: a cookie and no resname", () => {
  assert.deepEqual(
    parseClientMessage(`{"schema":"${SCHEMA}","cookie":"abc"}`),
    {
      schema: SCHEMA,
      cookie: "abc",
    },
  );
});

Deno.test("parseClientMessage() rejects bad fields with the cookie when it is readable", () => {
  const cases: [unknown, RegExp, string | undefined][] = [
    [
      { cookie: "c", resname: "r", amount: "1", lease: 1 },
      /"amount" must be a positive integer, got "1"/,
      "c",
    ],
    [
      { cookie: "c", resname: "r", amount: 1 },
      /"lease" must be a positive integer, got nothing/,
      "c",
    ],
    [{ cookie: "c", resname: "r", amount: 2 ** 32, lease: 1 }, /"amount"/, "c"],
    [
      { cookie: "c", resname: "", amount: 1, lease: 1 },
      /"resname" must match/,
      "c",
    ],
    [
      { cookie: "a\nb", resname: "r", amount: 1, lease: 1 },
      /"cookie" must be/,
      undefined,
    ],
    [{ cookie: 5 }, /"cookie" must be/, undefined],
  ];
  for (const [body, re, cookie] of cases) {
    const text = JSON.stringify({ schema: SCHEMA, ...(body as object) });
    assert.throws(() => parseClientMessage(text), (e) => {
      assert.ok(e instanceof ProtocolError);
      assert.match(e.message, re);
      assert.equal(e.cookie, cookie);
      return true;
    });
  }
  assert.throws(() => parseClientMessage("null"), /not a JSON object/);
  assert.throws(() => parseClientMessage('{"schema":"x"}'), /"schema" must be/);
});

Deno.test("parseServerMessage() tells grant, refusal, expiry and queue position apart", () => {
  const grant = parseServerMessage(
    `{"schema":"${SCHEMA}","cookie":"c","amount":2}`,
  );
  assert.ok("amount" in grant && grant.amount === 2);
  const refused = parseServerMessage(`{"schema":"${SCHEMA}","cookie":"c"}`);
  assert.ok("error" in refused, "real Sai: no amount means refused");
  const expired = parseServerMessage(
    `{"schema":"${SCHEMA}","cookie":"c","expired":true}`,
  );
  assert.ok("expired" in expired);
  const queued = parseServerMessage(
    `{"schema":"${SCHEMA}","cookie":"c","queued":{"position":3,"eta":12}}`,
  );
  assert.deepEqual("queued" in queued && queued.queued, {
    position: 3,
    eta: 12,
  });
});

Deno.test("parseBuilderMessage() reads the hello", () => {
  assert.deepEqual(
    parseBuilderMessage(`{"schema":"${SCHEMA}","hello":{"name":"b1"}}`),
    {
      schema: SCHEMA,
      hello: { name: "b1" },
    },
  );
  assert.throws(
    () => parseBuilderMessage(`{"schema":"${SCHEMA}","hello":{"name":"a b"}}`),
    /hello/,
  );
});

Deno.test("encode() writes schema first", () => {
  assert.equal(
    encode({ cookie: "c", schema: SCHEMA, error: "no" } as never),
    `{"schema":"${SCHEMA}","cookie":"c","error":"no"}`,
  );
  assert.equal(
    encode({ schema: SCHEMA, cookie: "c", error: "no" }),
    `{"schema":"${SCHEMA}","cookie":"c","error":"no"}`,
  );
  // A message without the schema, or another one, gets ours.
  assert.equal(
    encode({ schema: "x", cookie: "c", error: "no" } as never),
    `{"schema":"${SCHEMA}","cookie":"c","error":"no"}`,
  );
  assert.equal(
    encode({ cookie: "c", error: "no" } as never),
    `{"schema":"${SCHEMA}","cookie":"c","error":"no"}`,
  );
});

Deno.test("parseClientMessage() reads a multi-resource request with a priority", () => {
  const msg = parseClientMessage(
    `{"schema":"${SCHEMA}","cookie":"m","lease":30,"priority":2,"resources":[{"resname":"warmcat_conns","amount":2},{"resname":"db","amount":1}]}`,
  );
  assert.deepEqual(msg, {
    schema: SCHEMA,
    resname: "warmcat_conns",
    cookie: "m",
    amount: 2,
    lease: 30,
    resources: [
      { resname: "warmcat_conns", amount: 2 },
      { resname: "db", amount: 1 },
    ],
    priority: 2,
  });
  // What the builder forwards parses to the same request on the server.
  assert.deepEqual(parseBuilderMessage(encode(msg as never)), msg);
});

Deno.test("parseClientMessage() refuses bad resources lists and priorities", () => {
  const bad = [
    `"resources":[]`,
    `"resources":{"resname":"a","amount":1}`,
    `"resources":[{"resname":"a","amount":1},{"resname":"a","amount":2}]`,
    `"resources":[{"resname":"a b","amount":1}]`,
    `"resources":[{"resname":"a","amount":0}]`,
    `"resources":[${
      Array.from({ length: 17 }, (_, i) => `{"resname":"r${i}","amount":1}`)
        .join(",")
    }]`,
    `"resname":"a","amount":1,"priority":1.5`,
    `"resname":"a","amount":1,"priority":1001`,
  ];
  for (const fields of bad) {
    assert.throws(
      () =>
        parseClientMessage(
          `{"schema":"${SCHEMA}","cookie":"c","lease":1,${fields}}`,
        ),
      (err) => err instanceof ProtocolError && err.cookie === "c",
      fields,
    );
  }
});

Deno.test("parseServerMessage() keeps the resources of a multi-resource grant", () => {
  const msg = parseServerMessage(
    `{"schema":"${SCHEMA}","cookie":"m","amount":2,"resname":"a","lease":5,"expires":9,"resources":[{"resname":"a","amount":2},{"resname":"b","amount":1}]}`,
  );
  assert.deepEqual("resources" in msg && msg.resources, [
    { resname: "a", amount: 2 },
    { resname: "b", amount: 1 },
  ]);
});

Deno.test("parseServerMessage() says a refusal without a reason had none", () => {
  for (const body of [`"cookie":"c"`, `"cookie":"c","error":""`]) {
    assert.deepEqual(parseServerMessage(`{"schema":"${SCHEMA}",${body}}`), {
      schema: SCHEMA,
      cookie: "c",
      error: "refused by the server (no reason given)",
    });
  }
});

Deno.test("parseClientMessage() reads a holder's process and a yield's reason", () => {
  assert.deepEqual(
    parseClientMessage(
      `{"schema":"${SCHEMA}","resname":"r","cookie":"c","amount":1,"lease":5,"process":{"pid":42,"name":"ctest"}}`,
    ),
    {
      schema: SCHEMA,
      resname: "r",
      cookie: "c",
      amount: 1,
      lease: 5,
      process: { pid: 42, name: "ctest" },
    },
  );
  assert.deepEqual(
    parseClientMessage(
      `{"schema":"${SCHEMA}","cookie":"c","reason":"owner gone"}`,
    ),
    { schema: SCHEMA, cookie: "c", reason: "owner gone" },
  );
});

Deno.test("parseClientMessage() rejects a bad process or yield reason, naming the cookie", () => {
  const cases: [string, RegExp][] = [
    [
      `"resname":"r","amount":1,"lease":5,"process":{"pid":0,"name":"x"}`,
      /"process" must be/,
    ],
    [
      `"resname":"r","amount":1,"lease":5,"process":{"pid":1,"name":""}`,
      /"process" must be/,
    ],
    [
      `"resname":"r","amount":1,"lease":5,"process":{"pid":1,"name":"a\\nb"}`,
      /"process" must be/,
    ],
    [`"resname":"r","amount":1,"lease":5,"process":[1]`, /"process" must be/],
    [`"reason":"bored"`, /"reason" must be one of "owner gone", got "bored"/],
  ];
  for (const [body, re] of cases) {
    assert.throws(
      () => parseClientMessage(`{"schema":"${SCHEMA}","cookie":"c",${body}}`),
      (err: unknown) =>
        err instanceof ProtocolError && re.test(err.message) &&
        err.cookie === "c",
      body,
    );
  }
});

Deno.test("parseClientMessage() names an out-of-range number as such, not null", () => {
  assert.throws(
    () =>
      parseClientMessage(
        '{"schema":"com-warmcat-sai-resource","resname":"r","cookie":"c","amount":1,"lease":5,"priority":1e400}',
      ),
    /"priority" must be an integer from -1000 to 1000, got a number out of range/,
  );
});

Deno.test("`parseClientMessage()` keeps `progress: true` and rejects a non-boolean", () => {
  const base = {
    schema: SCHEMA,
    resname: "r",
    cookie: "c",
    amount: 1,
    lease: 10,
  };
  const asked = parseClientMessage(JSON.stringify({ ...base, progress: true }));
  assert.equal("progress" in asked && asked.progress, true);
  const not = parseClientMessage(JSON.stringify({ ...base, progress: false }));
  assert.equal("progress" in not, false);
  assert.throws(
    () => parseClientMessage(JSON.stringify({ ...base, progress: 1 })),
    /"progress" must be true or false/,
  );
});

Deno.test("`parseServerMessage()` reads when a released lease had expired", () => {
  const msg = parseServerMessage(
    JSON.stringify({
      schema: SCHEMA,
      cookie: "c",
      released: true,
      expiredAt: 5,
    }),
  );
  assert.deepEqual(msg, {
    schema: SCHEMA,
    cookie: "c",
    released: true,
    expiredAt: 5,
  });
});

Deno.test("`parseServerMessage()` reads a welcome's fence and heartbeat, ignoring values out of range", () => {
  const welcome = (w: Record<string, unknown>) =>
    parseServerMessage(JSON.stringify({ schema: SCHEMA, welcome: w }));
  assert.deepEqual(welcome({ id: "b1", fence: 20, heartbeat: 10 }), {
    schema: SCHEMA,
    welcome: { id: "b1", fence: 20, heartbeat: 10 },
  });
  // A timer armed past setTimeout's limit would fire at once.
  assert.deepEqual(welcome({ id: "b1", fence: 1e12, heartbeat: -1 }), {
    schema: SCHEMA,
    welcome: { id: "b1" },
  });
});

Deno.test("`parseBuilderMessage()` refuses a message of two kinds, naming its cookie", () => {
  for (
    const extra of [
      { hello: { name: "x" } },
      { ping: 7 },
      { restored: true },
    ]
  ) {
    const text = JSON.stringify({
      schema: SCHEMA,
      resname: "r",
      cookie: "c1",
      amount: 1,
      lease: 30,
      ...extra,
    });
    assert.throws(
      () => parseBuilderMessage(text),
      (err: unknown) =>
        err instanceof ProtocolError && err.cookie === "c1" &&
        /it has both "\w+" and "cookie"; one kind of message at a time/.test(
          err.message,
        ),
      text,
    );
  }
});

Deno.test("grant ids cross the wire: in grants, expiries, a builder's yields and restores, never from a client", () => {
  const grant = parseServerMessage(
    `{"schema":"${SCHEMA}","cookie":"c","amount":1,"resname":"r","lease":30,"expires":1,"id":"k3.1f"}`,
  );
  assert.equal("amount" in grant && grant.id, "k3.1f");
  const expired = parseServerMessage(
    `{"schema":"${SCHEMA}","cookie":"c","expired":true,"id":"k3.1f"}`,
  );
  assert.deepEqual(expired, {
    schema: SCHEMA,
    cookie: "c",
    expired: true,
    id: "k3.1f",
  });
  assert.deepEqual(
    parseBuilderMessage(`{"schema":"${SCHEMA}","cookie":"c","id":"k3.1f"}`),
    { schema: SCHEMA, cookie: "c", id: "k3.1f" },
  );
  const restore = parseBuilderMessage(
    `{"schema":"${SCHEMA}","resname":"r","cookie":"c","amount":1,"lease":9,"restore":"lease","id":"k3.1f"}`,
  );
  assert.equal("resname" in restore && restore.id, "k3.1f");
  // A client names no grant: its yields are by cookie, on its connection.
  assert.deepEqual(
    parseClientMessage(`{"schema":"${SCHEMA}","cookie":"c","id":"k3.1f"}`),
    { schema: SCHEMA, cookie: "c" },
  );
  assert.throws(
    () =>
      parseBuilderMessage(
        `{"schema":"${SCHEMA}","cookie":"c","id":"has space"}`,
      ),
    /"id" must match/,
  );
});

Deno.test("parseBuilderReply() reads a link state, never as a refusal", () => {
  const link = { up: false, server: "ws://h:1", since: 1700000000000 };
  const text = (body: object) => JSON.stringify({ schema: SCHEMA, ...body });
  assert.deepEqual(
    parseBuilderReply(text({ cookie: "c", link: { ...link, error: "down" } })),
    { schema: SCHEMA, cookie: "c", link: { ...link, error: "down" } },
  );
  assert.deepEqual(parseBuilderReply(text({ builder: "b1", link })), {
    schema: SCHEMA,
    builder: "b1",
    link,
  });
  // The server's own messages pass through as parseServerMessage() reads them.
  assert.ok("amount" in parseBuilderReply(text({ cookie: "c", amount: 1 })));
  for (
    const bad of [
      { cookie: "c", link: { ...link, up: "no" } },
      { cookie: "c", link: { ...link, since: 1.5 } },
      { cookie: "c", link: { ...link, error: 5 } },
      { cookie: "c", link: true },
      { builder: "a b", link },
    ]
  ) {
    assert.throws(() => parseBuilderReply(text(bad)), ProtocolError);
  }
  // A builder's link state is not the server's word: on the server's side
  // it is what real Sai makes of a message without `amount`.
  assert.ok("error" in parseServerMessage(text({ cookie: "c", link })));
});

Deno.test("parseClientMessage() reads a check alone, and a request's link flag", () => {
  const text = (body: object) => JSON.stringify({ schema: SCHEMA, ...body });
  assert.deepEqual(parseClientMessage(text({ check: true })), {
    schema: SCHEMA,
    check: true,
  });
  for (const bad of [{ check: 1 }, { check: true, cookie: "c" }]) {
    assert.throws(() => parseClientMessage(text(bad)), /Cannot parse check/);
  }
  const request = { cookie: "c", resname: "r", amount: 1, lease: 1 };
  assert.equal(
    (parseClientMessage(text({ ...request, link: true })) as { link?: true })
      .link,
    true,
  );
  assert.throws(
    () => parseClientMessage(text({ ...request, link: "yes" })),
    /"link" must be true or false/,
  );
  // The server does not read it: the builder answers it.
  assert.equal(
    "link" in parseBuilderMessage(text({ ...request, link: true })),
    false,
  );
});

/**
 * Operations on real processes: `/metrics` against `/api/status`, the admin
 * API, SIGHUP, the status command and structured logs.
 */

import assert from "node:assert/strict";
import {
  BuilderProc,
  holderPids,
  Proc,
  runClient,
  ServerProc,
  uniq,
  waitFor,
} from "./_harness.ts";
import { type HistogramSample, parseMetrics, valueOf } from "./_prometheus.ts";

const TOKEN = "t0ken-for-tests-5f3a";

function admin(
  server: ServerProc,
  method: string,
  path: string,
  options: { body?: string; token?: string | null } = {},
): Promise<Response> {
  const token = options.token === undefined ? TOKEN : options.token;
  return fetch(`http://127.0.0.1:${server.port}${path}`, {
    method,
    headers: {
      ...(token !== null && { authorization: `Bearer ${token}` }),
      "content-type": "application/json",
    },
    ...(options.body !== undefined && { body: options.body }),
  });
}

async function expectError(res: Response, status: number, re: RegExp) {
  const body = await res.json();
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(typeof body.error, "string");
  assert.match(body.error, re);
}

/** Lines of JSON logs from a server started with --log-format json. */
function jsonLogs(p: Proc): Record<string, unknown>[] {
  return p.stderr.text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

Deno.test("/metrics parses as Prometheus text and agrees with /api/status; events are logged as JSON", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "r=2,db=1",
    "--log-format",
    "json",
  ]);
  await using builder = await BuilderProc.start(server);
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "2", "60", "m1"], env)).code, 0);
  const waiting = runClient(["r", "1", "60", "m2", "--wait", "30"], env);
  await waitFor(
    "m2 to queue",
    async () => (await server.resource("r")).queuedRequests === 1,
  );
  const refused = await runClient(["db", "5", "60", "too-big"], env);
  assert.equal(refused.code, 1);
  assert.equal((await runClient(["db", "1", "1", "short"], env)).code, 0);
  await waitFor(
    "the short lease to expire",
    async () => (await server.status()).stats.expiries === 1,
  );

  const metricsUrl = `http://127.0.0.1:${server.port}/metrics`;
  const res = await fetch(metricsUrl);
  assert.match(
    res.headers.get("content-type") ?? "",
    /^text\/plain; version=0\.0\.4/,
  );
  const m = parseMetrics(await res.text());
  const doc = await server.status();
  for (const r of doc.resources) {
    const at = { resource: r.name };
    assert.equal(valueOf(m, "sai_resource_budget", at), r.budget);
    assert.equal(valueOf(m, "sai_resource_allocated", at), r.allocated);
    assert.equal(
      valueOf(m, "sai_resource_queued_requests", at),
      r.queuedRequests,
    );
    assert.equal(valueOf(m, "sai_resource_queued_amount", at), r.queuedAmount);
  }
  assert.equal(valueOf(m, "sai_resource_allocated", { resource: "r" }), 2);
  assert.equal(valueOf(m, "sai_resource_queued_amount", { resource: "r" }), 1);
  assert.equal(valueOf(m, "sai_resource_grants_total"), doc.stats.grants);
  assert.equal(doc.stats.grants, 2);
  assert.equal(
    valueOf(m, "sai_resource_refusals_total", { reason: "exceeds-budget" }),
    1,
  );
  assert.equal(valueOf(m, "sai_resource_expiries_total"), 1);
  assert.equal(valueOf(m, "sai_resource_releases_total"), 0);
  assert.equal(valueOf(m, "sai_builders_connected"), 1);
  assert.equal(m.get("sai_resource_grants_total")?.type, "COUNTER");

  // Releasing m1 grants m2 after a measurable wait.
  assert.equal((await runClient(["--release", "m1"], env)).code, 0);
  assert.equal((await waiting).code, 0);
  const after = parseMetrics(await (await fetch(metricsUrl)).text());
  const hist = after.get("sai_resource_wait_seconds")!
    .metrics[0] as HistogramSample;
  assert.equal(Number(hist.count), 3);
  assert.equal(Number(hist.buckets["+Inf"]), 3);
  assert.ok(Number(hist.sum) > 0, "m2 waited");
  assert.equal(valueOf(after, "sai_resource_releases_total"), 1);

  // Structured logs: one JSON object per line, at info, for each event.
  const logs = jsonLogs(server);
  const events = new Set(logs.map((l) => l.event));
  for (
    const e of [
      "builder connected",
      "granted",
      "refused",
      "expired",
      "released",
    ]
  ) {
    assert.ok(events.has(e), `no "${e}" in the log`);
  }
  const refusal = logs.find((l) => l.event === "refused")!;
  assert.equal(refusal.level, "info");
  assert.equal(refusal.reason, "exceeds-budget");
  assert.equal(typeof refusal.time, "string");
  await builder.stop();
  await server.stderr.wait(/"event":"builder disconnected"/);
});

Deno.test("admin API: refused without the right token, 400 on bad input, and nothing changes", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "r=2",
    "--admin-token",
    TOKEN,
  ]);
  const body = '{"budget":5}';
  const none = await admin(server, "POST", "/api/resources/r", {
    body,
    token: null,
  });
  assert.equal(
    none.headers.get("www-authenticate"),
    'Bearer realm="sai-server"',
  );
  await expectError(none, 401, /Authorization/);
  await expectError(
    await admin(server, "POST", "/api/resources/r", { body, token: "nope" }),
    403,
    /Wrong admin token/,
  );
  for (
    const bad of [
      "{",
      '{"budget":-1}',
      '{"budget":1.5}',
      '{"budget":"3"}',
      "{}",
      '{"budget":2000000000}',
      `{"budget":1,"pad":"${"x".repeat(5000)}"}`,
    ]
  ) {
    await expectError(
      await admin(server, "POST", "/api/resources/r", { body: bad }),
      400,
      /Cannot (parse body|set budget)/,
    );
  }
  await expectError(
    await admin(server, "POST", "/api/resources/bad%20name", { body }),
    400,
    /Resource name must match/,
  );
  await expectError(
    await admin(server, "GET", "/api/resources/r"),
    405,
    /not allowed/,
  );
  await expectError(
    await admin(server, "DELETE", "/api/resources/nope"),
    404,
    /No resource "nope"/,
  );
  await expectError(
    await admin(server, "DELETE", "/api/leases/nobody/c1"),
    404,
    /No connected builder/,
  );
  await expectError(
    await admin(server, "POST", "/metrics"),
    405,
    /not allowed/,
  );
  assert.equal((await server.resource("r")).budget, 2, "nothing changed");
  assert.ok(!server.stderr.text.includes(TOKEN), "the token is never logged");
  assert.match(server.stderr.text, /admin refused .*status=401/);

  await using plain = await ServerProc.start(["--resources", "r=2"]);
  await expectError(
    await admin(plain, "POST", "/api/resources/r", { body }),
    403,
    /disabled/,
  );
});

Deno.test("admin API: raising a budget grants waiting requests at once; lowering drains without revoking", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sai-admin-" });
  try {
    const tokenFile = `${dir}/token`;
    await Deno.writeTextFile(tokenFile, `${TOKEN}\n`);
    await using server = await ServerProc.start([
      "--resources",
      "r=1",
      "--admin-token-file",
      tokenFile,
    ]);
    await using builder = await BuilderProc.start(server);
    const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
    const q1c = uniq("q1");
    assert.equal((await runClient(["r", "1", "60", "c1"], env)).code, 0);
    const q1 = runClient(["r", "1", "60", q1c, "--wait", "30", "--quiet"], env);
    await waitFor(
      "q1 to queue",
      async () => (await server.resource("r")).queuedRequests === 1,
    );

    const grow = await admin(server, "POST", "/api/resources/r", {
      body: '{"budget":3}',
    });
    assert.equal(grow.status, 200);
    assert.deepEqual(await grow.json(), {
      resource: "r",
      budget: 3,
      previous: 1,
      granted: 1,
      refused: 0,
      persisted: false, // port 0 and no --state-file: no state file
    });
    assert.equal((await q1).code, 0, "granted by the raise");
    assert.equal((await runClient(["r", "1", "60", "c3"], env)).code, 0);

    // 3 allocated; lowered to 1, two over the budget.
    const shrink = await admin(server, "POST", "/api/resources/r", {
      body: '{"budget":1}',
    });
    assert.equal(shrink.status, 200);
    await shrink.body?.cancel();
    let r = await server.resource("r");
    assert.equal(r.allocated, 3, "no lease is revoked");
    assert.equal((await holderPids(q1c, builder)).length, 1);
    const q2 = runClient(
      ["r", "1", "60", "q2", "--wait", "30", "--quiet"],
      env,
    );
    // 1 free under the old budget, 2 over the new one: q2 must queue.
    r = await waitFor("q2 to reach the server", async () => {
      const now = await server.resource("r");
      const seen = [...now.queue, ...now.leases].some((x) => x.cookie === "q2");
      return seen ? now : undefined;
    });
    assert.deepEqual(
      r.queue.map((q) => q.cookie),
      ["q2"],
      "not granted while over the lowered budget",
    );
    // Freeing c1 leaves 2 allocated, still over the new budget of 1 but
    // with room for q2 under the old one of 3: the pass that follows must
    // not grant it.
    assert.equal((await runClient(["--release", "c1"], env)).code, 0);
    r = await waitFor("c1 to be freed", async () => {
      const now = await server.resource("r");
      return now.leases.every((l) => l.cookie !== "c1") ? now : undefined;
    });
    assert.deepEqual(r.queue.map((q) => q.cookie), ["q2"], "still draining");
    assert.equal(r.allocated, 2, "still over the lowered budget");
    assert.deepEqual(r.leases.map((l) => l.cookie).sort(), [q1c, "c3"].sort());
    // At the budget exactly: still no room.
    assert.equal((await runClient(["--release", "c3"], env)).code, 0);
    await waitFor(
      "c3 to be freed",
      async () => (await server.resource("r")).allocated === 1,
    );
    r = await server.resource("r");
    assert.deepEqual(r.queue.map((q) => q.cookie), ["q2"], "at the budget");
    assert.equal(r.overBudgetGrants, 0);
    assert.equal((await runClient(["--release", q1c], env)).code, 0);
    assert.equal((await q2).code, 0, "granted once under the new budget");
    // Budget 0: a queued request that can never fit is refused, not left.
    const never = runClient(["r", "1", "60", "never", "--wait", "30"], env);
    await waitFor(
      "never to queue",
      async () => (await server.resource("r")).queuedRequests === 1,
    );
    const zero = await admin(server, "POST", "/api/resources/r", {
      body: '{"budget":0}',
    });
    assert.equal((await zero.json()).refused, 1);
    const refused = await never;
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /exceeds the budget, lowered to 0/);
    assert.equal(
      (await server.resource("r")).allocated,
      1,
      "q2 keeps its lease",
    );
    assert.match(
      server.stderr.text,
      /INFO admin action=set-budget by=127\.0\.0\.1:\d+ resname=r budget=1 previous=3/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("admin API: force-release ends the holder and grants the next; resources are added and removed", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "r=2",
    "--admin-token",
    TOKEN,
  ]);
  await using builder = await BuilderProc.start(server, { name: "fb" });
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const victim = uniq("victim");
  assert.equal((await runClient(["r", "2", "600", victim], env)).code, 0);
  assert.equal((await holderPids(victim, builder)).length, 1);
  const next = runClient(
    ["r", "2", "60", "next", "--wait", "30", "--quiet"],
    env,
  );
  await waitFor(
    "next to queue",
    async () => (await server.resource("r")).queuedRequests === 1,
  );

  await expectError(
    await admin(server, "DELETE", "/api/leases/fb/next"),
    404,
    /holds no lease with cookie "next"/,
  );
  await expectError(
    await admin(server, "DELETE", "/api/resources/r"),
    409,
    /lease\(s\) are live/,
  );
  const res = await admin(server, "DELETE", `/api/leases/fb/${victim}`, {
    token: TOKEN,
  });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {
    cookie: victim,
    result: "released",
    builder: "fb",
    resource: "r",
    amount: 2,
  });
  await waitFor(
    "the holder to exit",
    async () => (await holderPids(victim, builder)).length === 0,
  );
  assert.equal((await next).code, 0, "the next request got the amount");
  await builder.stderr.wait(/revoked by an operator/);
  assert.match(
    server.stderr.text,
    new RegExp(`admin action=force-release .*cookie=${victim} result=released`),
  );
  assert.equal((await server.status()).stats.forcedReleases, 1);

  const add = await admin(server, "POST", "/api/resources/db", {
    body: '{"budget":3}',
  });
  assert.deepEqual(await add.json(), {
    resource: "db",
    budget: 3,
    previous: null,
    granted: 0,
    refused: 0,
    persisted: false,
  });
  assert.equal((await runClient(["db", "3", "60", "d1"], env)).code, 0);
  assert.equal((await runClient(["--release", "d1"], env)).code, 0);
  await waitFor(
    "d1 to be freed",
    async () => (await server.resource("db")).allocated === 0,
  );
  const del = await admin(server, "DELETE", "/api/resources/db");
  assert.equal(del.status, 200);
  await del.body?.cancel();
  assert.deepEqual(
    (await server.status()).resources.map((x) => x.name),
    ["r"],
  );
  const gone = await runClient(["db", "1", "60", "d2"], env);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /no such resource/);
});

Deno.test("SIGHUP re-reads --config: a raise grants at once, a bad file changes nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sai-hup-" });
  try {
    const config = `${dir}/sai.json`;
    const write = (resources: string) =>
      Deno.writeTextFile(
        config,
        JSON.stringify({
          "ws-protocols": [{ "com-warmcat-sai": { resources } }],
        }),
      );
    await write("r=1");
    await using server = await ServerProc.start(["--config", config]);
    await using builder = await BuilderProc.start(server);
    const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
    assert.equal((await runClient(["r", "1", "60", "h1"], env)).code, 0);
    const h2 = runClient(
      ["r", "1", "60", "h2", "--wait", "30", "--quiet"],
      env,
    );
    await waitFor(
      "h2 to queue",
      async () => (await server.resource("r")).queuedRequests === 1,
    );

    await write("r=2,extra=4");
    server.kill("SIGHUP");
    assert.equal((await h2).code, 0);
    assert.equal((await server.resource("extra")).budget, 4);

    await Deno.writeTextFile(config, "{ not json");
    server.kill("SIGHUP");
    await server.stderr.wait(/SIGHUP: config not applied/);
    assert.equal((await server.resource("r")).budget, 2);

    // r leaves the config while leased: it drains at budget 0 instead.
    await write("extra=4");
    server.kill("SIGHUP");
    await server.stderr.wait(/resource not removed: leases are live/);
    const r = await server.resource("r");
    assert.equal(r.budget, 0);
    assert.equal(r.allocated, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sai-server status prints the view as an aligned table, or JSON", async () => {
  await using server = await ServerProc.start([
    "--resources",
    "warmcat_conns=4",
  ]);
  await using builder = await BuilderProc.start(server, { name: "tb" });
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal(
    (await runClient(["warmcat_conns", "3", "120", "cli-cookie"], env)).code,
    0,
  );
  const table = await new Proc(["server.ts", "status", "--server", server.url])
    .finished();
  assert.equal(table.code, 0, table.stderr);
  const lines = table.stdout.split("\n");
  assert.match(lines[0]!, /^RESOURCE\s+ALLOCATED\s+BUDGET\s+USE\s+QUEUED/);
  assert.match(lines[1]!, /^warmcat_conns\s+3\s+4\s+75 %\s+0\s+0\s+3$/);
  const leaseHead = lines.indexOf("LEASES") + 1;
  assert.match(
    lines[leaseHead]!,
    /^RESOURCE\s+BUILDER\s+COOKIE\s+AMOUNT\s+HELD FOR\s+EXPIRES IN\s+FOR PROCESS$/,
  );
  const row = lines[leaseHead + 1]!;
  // The holder follows the process that ran sai-resource: this test's.
  assert.match(
    row,
    new RegExp(
      `^warmcat_conns\\s+tb\\s+cli-cookie\\s+3\\s+\\d+ s\\s+(1 min 5\\d s|2 min 0 s)\\s+deno\\[${Deno.pid}\\]$`,
    ),
  );
  // Aligned: the row's columns start where the header's do.
  assert.equal(row.indexOf("cli-cookie"), lines[leaseHead]!.indexOf("COOKIE"));

  const json = await new Proc([
    "server.ts",
    "status",
    "--server",
    `http://127.0.0.1:${server.port}`,
    "--json",
  ]).finished();
  assert.equal(json.code, 0, json.stderr);
  const doc = JSON.parse(json.stdout);
  assert.equal(doc.version, 1);
  assert.equal(doc.resources[0].leases[0].builder, "tb");
  assert.deepEqual(doc.resources[0].leases[0].process, {
    pid: Deno.pid,
    name: "deno",
  });

  const usage = await new Proc(["server.ts", "status", "--bogus"]).finished();
  assert.equal(usage.code, 2);
  assert.match(
    usage.stderr,
    /^sai-server status: unknown option "--bogus"\nTry "sai-server status --help" for the options\.\n$/,
  );
  await server.stop();
  const down = await new Proc(["server.ts", "status", "--server", server.url])
    .finished();
  assert.equal(down.code, 1);
  assert.match(
    down.stderr,
    /cannot get "http:\/\/127\.0\.0\.1:\d+\/api\/status": connection refused/,
  );
});

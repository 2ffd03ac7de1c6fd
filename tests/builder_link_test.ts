/**
 * A builder without a working link to the server says so (issue #21): to
 * every client that waits, at once and when the link changes; in a
 * timeout's message; to `sai-resource --check`.  And a builder's name is
 * unique among live builders.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  BuilderProc,
  Proc,
  RawBuilder,
  runClient,
  ServerProc,
  waitFor,
} from "./_harness.ts";
import { FaultProxy } from "./_proxy.ts";
import { UpstreamBuilder } from "./_upstream_builder.ts";
import { JsonObjectSplitter } from "../src/protocol/json_splitter.ts";
import { NAME_IN_USE } from "../src/protocol/protocol.ts";

/**
 * A server's URL with nothing listening on it (a server that was there and
 * stopped), and a way to start one there again.
 */
async function deadServer(dir: string): Promise<{
  url: string;
  start: () => Promise<ServerProc>;
}> {
  const first = await ServerProc.start(["--resources", "r=1"]);
  const { url, port } = first;
  await first.stop();
  return {
    url,
    start: async () => {
      const p = new ServerProc([
        "server.ts",
        "--listen",
        `127.0.0.1:${port}`,
        "--resources",
        "r=3",
        // Not the default under ~/.local/state: a fixed port would use it.
        "--state-file",
        `${dir}/state.json`,
      ]);
      try {
        await p.stdout.wait(/listening on ws:/);
      } catch (err) {
        await p.stop();
        throw err;
      }
      p.url = url;
      p.port = port;
      return p;
    },
  };
}

/** A builder for `url`, not waiting for any server to list it. */
async function builderFor(
  url: string,
  options: { name?: string } = {},
): Promise<BuilderProc> {
  // The harness wants a server only to wait for it; none is asked here.
  return await BuilderProc.start({} as ServerProc, {
    url,
    noWait: true,
    ...options,
  });
}

/** The JSON objects a C-client stand-in hex-dumped so far. */
function received(p: Proc): Record<string, unknown>[] {
  const hex = [...p.stdout.text.matchAll(/^rx ([0-9a-f]+)$/gm)].map((m) =>
    m[1]!
  ).join("");
  const bytes = new Uint8Array(
    (hex.match(/../g) ?? []).map((h) => parseInt(h, 16)),
  );
  return new JsonObjectSplitter().push(bytes).map((t) => JSON.parse(t));
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sai-link-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Resolves with the exit code, or fails the test if it does not exit in time. */
async function exitsWithin(p: Proc, ms: number): Promise<number> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      p.kill("SIGKILL");
      reject(new Error(`still running after ${ms} ms:\n${p.stderr.text}`));
    }, ms);
  });
  try {
    return (await Promise.race([p.finished(), late])).code;
  } finally {
    clearTimeout(timer);
  }
}

const NO_LINK = (url: string) =>
  new RegExp(
    `sai-resource: the builder has no link to the server ${url} since [^\\n]*: [^\\n]*refused[^\\n]*; still waiting`,
    "i",
  );

Deno.test("waiting clients hear at once that the builder has no server link, and again when it is back", async () => {
  await withDir(async (dir) => {
    const dead = await deadServer(dir);
    await using builder = await builderFor(dead.url);
    await builder.stderr.wait(/cannot connect to server/);
    const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
    const started: Proc[] = [];
    let server: ServerProc | undefined;
    try {
      // The holder form (through its holder), --foreground, and the C
      // client, which must never get a message without `amount`.
      const held = new Proc(["client.ts", "r", "1", "120", "--wait", "60"], {
        env,
      });
      const fg = new Proc([
        "client.ts",
        "r",
        "1",
        "120",
        "--foreground",
        "--wait",
        "60",
      ], { env });
      const c = new Proc(["tests/_c_client.ts", "r", "1", "120", "c1"], {
        env,
      });
      started.push(held, fg, c);
      // At once: well inside their 60 s wait.
      await held.stderr.wait(NO_LINK(dead.url), 10_000);
      await fg.stderr.wait(NO_LINK(dead.url), 10_000);
      await c.stdout.wait(/connected/);

      // A quiet client says nothing while it waits; its timeout names the
      // cause: the link was down for all of it.
      const quiet = await runClient(
        ["r", "1", "120", "--wait", "1", "-d0", "--", "true"],
        env,
      );
      assert.equal(quiet.code, 1, quiet.stderr);
      assert.doesNotMatch(quiet.stderr, /has no link/);
      assert.match(
        quiet.stderr,
        new RegExp(
          `timed out waiting; the request was withdrawn; the builder had no link to the server for the whole wait \\(${dead.url}, down since .*; last error: .*refused`,
          "i",
        ),
      );

      server = await dead.start();
      await held.stderr.wait(
        /the builder is linked to the server \S+ again; still waiting/,
      );
      await fg.stderr.wait(/linked to the server \S+ again/);
      assert.equal(await exitsWithin(held, 15_000), 0, held.stderr.text);
      assert.match(held.stderr.text, /granted 1 of r/);
      await fg.stderr.wait(/granted 1 of r/);
      const grant = await waitFor(
        "the C client's grant",
        () => received(c).find((m) => m.amount === 1),
      );
      assert.equal(grant.cookie, "c1");
      assert.deepEqual(
        received(c).filter((m) => "link" in m || !("amount" in m)),
        [],
        "the C client got only its grant",
      );
      // Each was told once of each change, not at every retry.
      assert.equal(held.stderr.text.match(/has no link/g)?.length, 1);
      fg.kill("SIGTERM");
      assert.equal((await fg.finished()).code, 0);
    } finally {
      for (const p of started) await p.stop();
      await server?.stop();
    }
  });
});

Deno.test("sai-resource --check: 0 when linked, 1 when not, 2 when no builder answers", async () => {
  await withDir(async (dir) => {
    await using server = await ServerProc.start(["--resources", "r=1"]);
    await using linked = await BuilderProc.start(server, { name: "chk" });
    const up = await runClient(["--check", "--socket", linked.socket]);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /^builder: chk$/m);
    assert.match(up.stdout, new RegExp(`^server: ${server.url}$`, "m"));
    assert.match(up.stdout, /^link: up since \S+ \S+ UTC \(\d+ s\)$/m);

    const dead = await deadServer(dir);
    await using unlinked = await builderFor(dead.url, { name: "lonely" });
    await unlinked.stderr.wait(/cannot connect to server/);
    // The socket from the environment, as a test's fixture would have it.
    const down = await runClient(["--check"], {
      SAI_BUILDER_RESOURCE_PROXY: unlinked.socket,
    });
    assert.equal(down.code, 1, down.stderr);
    assert.match(down.stdout, /^builder: lonely$/m);
    assert.match(down.stdout, new RegExp(`^server: ${dead.url}$`, "m"));
    assert.match(down.stdout, /^link: down since .*: .*refused/im);

    const none = await runClient(["--check", "--socket", `${dir}/nobody.sock`]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /Cannot reach the builder/);
    assert.equal(none.stdout, "");

    await using upstream = await UpstreamBuilder.start({ r: 1 });
    const silent = await runClient([
      "--check",
      "--socket",
      upstream.socket,
      "--wait",
      "1",
    ]);
    assert.equal(silent.code, 2);
    assert.match(silent.stderr, /no answer within 1 s/);
  });
});

Deno.test("a builder whose name a live builder holds is refused, and exits 1 naming the other's address", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using first = await BuilderProc.start(server, { name: "twin" });
  const peer = (await server.stderr.wait(
    /builder connected builder=\S+ name=twin peer=(\S+)/,
  ))[1]!;

  // On the wire: close code 1008, the other's address as the reason.
  await using raw = await RawBuilder.connect(server.url, {
    name: "twin",
    session: "another-session-0123456789",
  });
  const ev = await raw.closed;
  assert.equal(ev.code, 1008);
  assert.equal(ev.reason, `${NAME_IN_USE}${peer}`);

  const dir = await Deno.makeTempDir({ prefix: "sai-twin-" });
  try {
    const second = new Proc([
      "builder.ts",
      "--server",
      server.url,
      "--socket",
      `${dir}/twin.sock`,
      "--name",
      "twin",
    ]);
    assert.equal(await exitsWithin(second, 15_000), 1);
    assert.match(
      second.stderr.text,
      new RegExp(
        `sai-builder: Cannot join the server at "${server.url}": the name "twin" is in use by a live builder at ${
          peer.replace(/\./g, "\\.")
        }; give this builder another --name`,
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  // The first is untouched.
  const held = await runClient(["r", "1", "30", "--quiet"], {
    SAI_BUILDER_RESOURCE_PROXY: first.socket,
  });
  assert.equal(held.code, 0, held.stderr);
  assert.deepEqual(
    (await server.status()).builders.map((b) => b.name),
    ["twin"],
  );
});

Deno.test("a builder resuming its own session keeps its name, even while its old link still looks live", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  await using proxy = new FaultProxy(server.port);
  // It gives up on a silent link after 1 s; the server, after its 10 s.
  await using builder = await BuilderProc.start(server, {
    name: "same",
    url: proxy.url,
    args: ["--heartbeat", "1"],
  });
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  assert.equal((await runClient(["r", "1", "60", "kept"], env)).code, 0);
  proxy.blackhole();
  await builder.stderr.wait(/lost the server/);
  await server.stderr.wait(/builder reconnected builder=\S+ name=same/);
  // And once more after a cut the server saw: its session was detached.
  proxy.cut();
  await server.stderr.wait(/builder disconnected/);
  await server.stderr.wait(
    /builder reconnected[^\n]*\n[^]*builder reconnected builder=\S+ name=same/,
  );
  assert.doesNotMatch(
    server.stderr.text,
    /builder refused|two live builders share a name/,
  );
  const r = await server.resource("r");
  assert.deepEqual(r.leases.map((l) => l.cookie), ["kept"]);
  assert.equal((await runClient(["--release", "kept"], env)).code, 0);
});

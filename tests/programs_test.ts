import assert from "node:assert/strict";
import {
  BuilderProc,
  Proc,
  runClient,
  ServerProc,
  uniq,
  waitFor,
} from "./_harness.ts";

Deno.test("sai-server reads its budgets from a Sai vhost config", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = `${dir}/libwebsockets.org`;
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        vhosts: [{
          name: "libwebsockets.org",
          "ws-protocols": [{
            "com-warmcat-sai": { resources: "warmcat_conns=32,db=2" },
          }],
        }],
      }),
    );
    await using server = await ServerProc.start(["--config", config]);
    const doc = await server.status();
    assert.deepEqual(doc.resources.map((r) => [r.name, r.budget]), [[
      "warmcat_conns",
      32,
    ], ["db", 2]]);
    assert.equal(doc.version, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sai-server flags override the config file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = `${dir}/conf`;
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        "ws-protocols": [{ "com-warmcat-sai": { resources: "a=1" } }],
      }),
    );
    await using server = await ServerProc.start([
      "--config",
      config,
      "--resources",
      "b=5",
    ]);
    assert.deepEqual((await server.status()).resources.map((r) => r.name), [
      "b",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sai-server start-up errors exit 2 with a clear message", async () => {
  const cases: [string[], RegExp][] = [
    [[], /--resources or --config is required/],
    [["--resources", ""], /the list is empty/],
    [["--resources", "a=1,a=2"], /"a" is given twice/],
    [["--resources", "a=-3"], /budget of "a" must be an integer/],
    [["--resources", "a=x"], /budget of "a" must be an integer/],
    [
      ["--resources", "a=1", "--listen", "nohost"],
      /--listen must be HOST:PORT/,
    ],
    [
      ["--resources", "a=1", "--max-lease", "0"],
      /--max-lease must be an integer from 1 to 4294967295, got "0"/,
    ],
    // Past setTimeout's limit (2³¹−1 ms) a timer fires at once: these
    // dropped a lost builder's leases 3 ms after the link went.
    [
      ["--resources", "a=1", "--builder-grace", "2200000"],
      /--builder-grace must be from 0.1 to 86400 seconds, got "2200000"/,
    ],
    [
      ["--resources", "a=1", "--reclaim-grace", "2200000"],
      /--reclaim-grace must be from 0 to 86400 seconds, got "2200000"/,
    ],
    [
      ["--resources", "a=1", "--max-builders", "0"],
      /--max-builders must be an integer from 1 to 100000, got "0"/,
    ],
    [
      ["--resources", "a=1", "--heartbeat", "1e9"],
      /--heartbeat must be from 0.1 to 3600 seconds, got "1e9"/,
    ],
    [
      ["--resources", "a=1", "--max-lease", "4294967296"],
      /--max-lease must be an integer from 1 to 4294967295, got "4294967296"/,
    ],
    [
      ["--resources", "a=1", "--log-level", "loud"],
      /--log-level: expected one of/,
    ],
    [["--resources", "a=1", "--frobnicate"], /unknown option "--frobnicate"/],
    [["--resources", "a=1", "--listen"], /--listen needs a value/],
    [["--config", "/nonexistent/conf"], /cannot read --config/],
  ];
  for (const [args, re] of cases) {
    const got = await new Proc(["server.ts", ...args]).finished();
    assert.equal(got.code, 2, `${args}: ${got.stderr}`);
    assert.match(got.stderr, re);
    assert.match(
      got.stderr,
      /^sai-server: .*\nTry "sai-server --help" for the options\.\n$/,
    );
    assert.equal(got.stdout, "");
  }
});

Deno.test("sai-builder makes its socket 0600 in a 0700 directory", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  const parent = await Deno.makeTempDir();
  try {
    const dir = `${parent}/nested/sai`;
    await using builder = await BuilderProc.start(server, { dir });
    assert.equal(builder.socket, `${dir}/b1.sock`);
    assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
    assert.equal((await Deno.stat(builder.socket)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("sai-builder replaces a stale socket but not a live one", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/b1.sock`;
    // A socket file nobody listens on: what a crashed builder leaves.
    const crashed = await BuilderProc.start(server, { dir });
    crashed.kill("SIGKILL");
    await crashed.finished();
    assert.ok((await Deno.lstat(path)).isSocket);
    await waitFor(
      "the server to drop the crashed builder",
      async () => (await server.status()).builders.length === 0,
    );
    await using first = await BuilderProc.start(server, { dir });
    assert.equal(first.socket, path);

    const second = new Proc([
      "builder.ts",
      "--server",
      server.url,
      "--socket",
      path,
      "--name",
      "b2",
    ]);
    const got = await second.finished();
    assert.equal(got.code, 1);
    assert.match(got.stderr, /another builder is already listening there/);
    // The first builder is untouched.
    await waitFor(
      "the first builder to still be listed",
      async () =>
        (await server.status()).builders.map((b) => b.name).join() === "b1",
    );
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("sai-builder usage errors exit 2", async () => {
  for (
    const [args, re] of [
      [[], /--server must be ws:\/\/HOST:PORT, got nothing/],
      [["--server", "http://x"], /--server must be ws/],
      [["--server", "ws://127.0.0.1:1", "--name", "a b"], /--name must match/],
      [
        ["--server", "ws://127.0.0.1:1", "--heartbeat", "2200000"],
        /--heartbeat must be from 0.1 to 3600 seconds, got "2200000"/,
      ],
      [
        ["--server", "ws://127.0.0.1:1", "--request-timeout", "0"],
        /--request-timeout must be from 0.1 to 3600 seconds, got "0"/,
      ],
    ] as [string[], RegExp][]
  ) {
    const got = await new Proc(["builder.ts", ...args]).finished();
    assert.equal(got.code, 2, got.stderr);
    assert.match(got.stderr, re);
  }
});

Deno.test("sai-server refuses a WebSocket peer that never says hello", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  const ws = new WebSocket(server.url);
  const closed = new Promise<CloseEvent>((resolve) => ws.onclose = resolve);
  await new Promise((resolve) => ws.onopen = resolve);
  ws.send(
    JSON.stringify({
      schema: "com-warmcat-sai-resource",
      resname: "r",
      cookie: "c",
      amount: 1,
      lease: 1,
    }),
  );
  const ev = await closed;
  assert.equal(ev.code, 1008);
  assert.match(ev.reason, /first message must be a hello/);
  assert.equal((await server.resource("r")).allocated, 0);
});

Deno.test("every program answers --help and -h with its usage on stdout", async () => {
  const programs: [string[], RegExp][] = [
    [["server.ts"], /^usage: sai-server \(--resources/],
    [["server.ts", "status"], /^usage: sai-server status/],
    [["builder.ts"], /^usage: sai-builder --server/],
    [["client.ts"], /^usage: sai-resource NAME AMOUNT/],
  ];
  for (const [program, usage] of programs) {
    // Help wins over anything else on the line, valid or not.
    for (const extra of [["--help"], ["-h"], ["--bogus", "-h"]]) {
      const args = [...program, ...extra];
      const got = await new Proc(args).finished();
      assert.equal(got.code, 0, `${args.join(" ")}: ${got.stderr}`);
      assert.match(got.stdout, usage, args.join(" "));
      assert.equal(got.stderr, "", args.join(" "));
    }
  }
});

Deno.test("sai-server names the address that is already in use", async () => {
  await using first = await ServerProc.start(["--resources", "r=1"]);
  const second = await new Proc([
    "server.ts",
    "--resources",
    "r=1",
    "--listen",
    `127.0.0.1:${first.port}`,
  ]).finished();
  assert.equal(second.code, 1, second.stderr);
  assert.match(
    second.stderr,
    new RegExp(
      `^sai-server: Cannot listen on "127\\.0\\.0\\.1:${first.port}": address already in use$`,
      "m",
    ),
  );
});

Deno.test("sai-builder's defaults work with its permissions: name from the host name, socket by XDG_RUNTIME_DIR or uid", async () => {
  await using server = await ServerProc.start(["--resources", "r=1"]);
  const runtime = await Deno.makeTempDir();
  const named = uniq("b");
  const cases: [string[], Record<string, string>, string][] = [
    // No --name: the host name (--allow-sys=hostname).
    [[], { XDG_RUNTIME_DIR: runtime }, `${runtime}/sai/${hostName()}.sock`],
    // No XDG_RUNTIME_DIR: /tmp/sai-UID (--allow-sys=uid).  A unique name,
    // as that directory is shared with other runs.
    [
      ["--name", named],
      { XDG_RUNTIME_DIR: "" },
      `/tmp/sai-${Deno.uid()}/${named}.sock`,
    ],
  ];
  try {
    for (const [args, env, socket] of cases) {
      const builder = new Proc(
        ["builder.ts", "--server", server.url, ...args],
        {
          env,
        },
      );
      try {
        const m = await builder.stdout.wait(/SAI_BUILDER_RESOURCE_PROXY=(\S+)/)
          .catch((err) => {
            throw new Error(`${err.message}\nstderr: ${builder.stderr.text}`);
          });
        assert.equal(m[1], socket);
      } finally {
        await builder.stop();
        await Deno.remove(socket).catch(() => {});
      }
    }
  } finally {
    await Deno.remove(runtime, { recursive: true });
  }
});

function hostName(): string {
  return Deno.hostname().split(".")[0]!.slice(0, 64);
}

Deno.test({
  name:
    "sai-builder listens in a private directory when another user made its default one first",
  // chown to another uid needs root.
  ignore: Deno.uid() !== 0,
  fn: async () => {
    // Found by an adversarial review: another local user who makes
    // /tmp/sai-UID first kept the builder from ever starting there.
    await using server = await ServerProc.start(["--resources", "r=1"]);
    const runtime = await Deno.makeTempDir();
    await Deno.mkdir(`${runtime}/sai`, { mode: 0o755 });
    await Deno.chown(`${runtime}/sai`, 65534, 65534);
    const name = uniq("b");
    const builder = new Proc(
      ["builder.ts", "--server", server.url, "--name", name],
      { env: { XDG_RUNTIME_DIR: runtime } },
    );
    try {
      const m = await builder.stdout.wait(/SAI_BUILDER_RESOURCE_PROXY=(\S+)/)
        .catch((err) => {
          throw new Error(`${err.message}\nstderr: ${builder.stderr.text}`);
        });
      const socket = m[1]!;
      assert.match(socket, new RegExp(`/sai-0-[^/]+/${name}\\.sock$`));
      assert.match(
        builder.stderr.text,
        /WARN the default socket directory is unsafe: listening in a private one .*owned by uid 65534/,
      );
      const dir = await Deno.stat(socket.slice(0, socket.lastIndexOf("/")));
      assert.equal(dir.uid, 0);
      assert.equal((dir.mode ?? 0) & 0o777, 0o700);
      const got = await runClient([
        "r",
        "1",
        "30",
        uniq("c"),
        "--socket",
        socket,
      ]);
      assert.equal(got.code, 0, got.stderr);
      assert.equal(
        (await runClient(["--release", got.stdout.trim(), "--socket", socket]))
          .code,
        0,
      );
      await builder.stop();
      await assert.rejects(
        () => Deno.stat(socket.slice(0, socket.lastIndexOf("/"))),
        Deno.errors.NotFound,
        "the private directory is removed at shutdown",
      );
    } finally {
      await builder.stop();
      await Deno.remove(runtime, { recursive: true });
    }
  },
});

Deno.test("--help lists every option with the environment and exit codes; --version names ours and Deno's", async () => {
  // On a builder with only the binaries, --help is all the documentation
  // there is: every option of the parser is in it (a flag added without
  // its line fails here).
  const { OPTIONS: serverOptions } = await import("../server.ts");
  const { OPTIONS: builderOptions } = await import("../builder.ts");
  const { CLIENT_OPTIONS } = await import("../src/client/client_args.ts");
  const version = JSON.parse(
    await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
  ).version as string;
  const programs: [string, string, string[], string[]][] = [
    ["server.ts", "sai-server", Object.keys(serverOptions), [
      "STATE_DIRECTORY",
    ]],
    ["builder.ts", "sai-builder", Object.keys(builderOptions), [
      "XDG_RUNTIME_DIR",
    ]],
    [
      "client.ts",
      "sai-resource",
      Object.keys(CLIENT_OPTIONS).filter((o) =>
        o !== "holder" && o !== "owner-start"
      ),
      [
        "SAI_BUILDER_RESOURCE_PROXY",
        "SAI_RESOURCE_COOKIE_PREFIX",
        "SAI_RESOURCE_FOREGROUND",
      ],
    ],
  ];
  for (const [entry, name, options, env] of programs) {
    const help = await new Proc([entry, "--help"]).finished();
    assert.equal(help.code, 0);
    for (const option of options) {
      assert.match(
        help.stdout,
        new RegExp(`--${option}\\b`),
        `${name} --${option}`,
      );
    }
    for (const variable of env) assert.match(help.stdout, new RegExp(variable));
    assert.match(help.stdout, /^Exit codes:\n {2}0 /m, name);
    assert.match(help.stdout, /^ {2}2 +usage error/m, name);
    for (const line of help.stdout.split("\n").slice(1)) {
      assert.ok(line.length <= 80, `${name} --help: "${line}" is too long`);
    }
    const v = await new Proc([entry, "--version"]).finished();
    assert.equal(v.code, 0);
    assert.equal(v.stdout, `${name} ${version} (deno ${Deno.version.deno})\n`);
  }
});

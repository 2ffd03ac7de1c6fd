import assert from "node:assert/strict";
import { type Command, parseCommand } from "./client_args.ts";

const ENV = new Map([["SAI_BUILDER_RESOURCE_PROXY", "/tmp/b.sock"]]);

function parse(args: string[], env = ENV): Command {
  return parseCommand(args, env);
}

Deno.test("`parseCommand()` accepts -d LEVEL and -dLEVEL in every form", () => {
  const forms = [
    ["r", "1", "10", "cookie"],
    ["r=1,s=2", "10", "cookie"],
    ["r", "1", "10", "--scope", "s"],
    ["--release", "cookie"],
    ["--release-scope", "s"],
    ["r", "1", "10", "--", "true", "-d5"],
    ["--holder", "r", "1", "10", "cookie"],
  ];
  for (const form of forms) {
    for (const d of [["-d1039"], ["-d", "1039"], ["--debug=1039"]]) {
      const at = form.indexOf("--") < 0 ? form.length : form.indexOf("--");
      const args = [...form.slice(0, at), ...d, ...form.slice(at)];
      assert.doesNotThrow(() => parse(args), args.join(" "));
    }
  }
  // What follows -- is the command's, -d included.
  const launched = parse(["r", "1", "10", "--", "tool", "-d5"]);
  assert.ok(launched.kind === "launch");
  assert.deepEqual(launched.argv, ["tool", "-d5"]);
  assert.throws(() => parse(["r", "1", "10", "-dx"]), /-d must be a log level/);
});

Deno.test("`parseCommand()` reads -d as libwebsockets' log bits: 0 quiet, INFO or DEBUG verbose", () => {
  const of = (d: string) => {
    const c = parse(["r", "1", "10", "c", `-d${d}`]);
    assert.ok(c.kind === "acquire");
    return [c.quiet, c.verbose];
  };
  assert.deepEqual(of("0"), [true, false]);
  assert.deepEqual(of("3"), [false, false]);
  assert.deepEqual(of("1039"), [false, true]);
  assert.deepEqual(of("16"), [false, true]);
});

Deno.test("`parseCommand()` holds in the foreground with --foreground or SAI_RESOURCE_FOREGROUND=1", () => {
  const fg = (args: string[], env: [string, string][] = []) => {
    const c = parse(["r", "1", "10", "c", ...args], new Map([...ENV, ...env]));
    assert.ok(c.kind === "acquire");
    return c.foreground;
  };
  assert.equal(fg([]), false);
  assert.equal(fg(["--foreground"]), true);
  assert.equal(fg([], [["SAI_RESOURCE_FOREGROUND", "1"]]), true);
  assert.equal(fg([], [["SAI_RESOURCE_FOREGROUND", "0"]]), false);
  assert.equal(fg([], [["SAI_RESOURCE_FOREGROUND", ""]]), false);
});

Deno.test("`parseCommand()` holds in the foreground with -d LEVEL (upstream's tooling) unless --detach or SAI_RESOURCE_FOREGROUND=0", () => {
  const fg = (args: string[], env: [string, string][] = []) => {
    const c = parse(["r", "1", "10", "c", ...args], new Map([...ENV, ...env]));
    assert.ok(c.kind === "acquire");
    return c.foreground;
  };
  assert.equal(fg(["-d1039"]), true);
  assert.equal(fg(["-d", "0"]), true);
  assert.equal(fg(["--debug=1039"]), true);
  assert.equal(fg(["-d1039", "--detach"]), false);
  assert.equal(fg(["-d1039"], [["SAI_RESOURCE_FOREGROUND", "0"]]), false);
  assert.equal(fg(["-d1039"], [["SAI_RESOURCE_FOREGROUND", "off"]]), false);
  assert.equal(fg(["-d1039"], [["SAI_RESOURCE_FOREGROUND", ""]]), true);
  assert.equal(fg(["--detach"], [["SAI_RESOURCE_FOREGROUND", "1"]]), false);
  assert.equal(fg(["--foreground"], [["SAI_RESOURCE_FOREGROUND", "0"]]), true);
  // The holder our parent spawns is never a foreground holder.
  assert.equal(
    fg(["--holder", "-d1039"], [["SAI_RESOURCE_FOREGROUND", "1"]]),
    false,
  );
  const multi = parse(["r=1,s=1", "10", "-d1039"]);
  assert.ok(multi.kind === "acquire" && multi.foreground);
  assert.throws(
    () => parse(["r", "1", "10", "--foreground", "--detach"]),
    /give --foreground or --detach, not both/,
  );
  for (
    const args of [
      ["r", "1", "10", "--detach", "--", "true"],
      ["--release", "c", "--detach"],
    ]
  ) {
    assert.throws(() => parse(args), /--detach is for the holder form/);
  }
  // The owner flags are the holder's: with -d they need --detach.
  assert.throws(
    () => parse(["r", "1", "10", "-d1039", "--owner-pid", "42"]),
    /--owner-pid is for the holder form .*; -d LEVEL selects the foreground form: add --detach/,
  );
  const detached = parse(["r", "1", "10", "-d1039", "--detach", "--no-owner"]);
  assert.ok(detached.kind === "acquire" && !detached.foreground);
  assert.deepEqual(detached.owner, { none: true });
});

Deno.test("`parseCommand()` suggests NAME=AMOUNT for NAME:AMOUNT", () => {
  const hint =
    /a resource and its amount are written NAME=AMOUNT, as in "warmcat_conns=1"/;
  assert.throws(() => parse(["warmcat_conns:1", "30"]), hint);
  assert.throws(() => parse(["warmcat_conns:1", "30", "cookie"]), hint);
  assert.throws(
    () => parse(["db=1,warmcat_conns:2", "30"]),
    /NAME must match .*, got "warmcat_conns:2"; .* as in "warmcat_conns=2"/,
  );
  // No hint where a colon is not the mistake.
  assert.throws(
    () => parse(["warmcat_conns", "30"]),
    (err: Error) => !/NAME=AMOUNT, as in/.test(err.message),
  );
});

Deno.test("`parseCommand()` says a URL is not the builder's socket", () => {
  for (
    const [args, env, from] of [
      [["--socket", "ws://127.0.0.1:4460"], ENV, "--socket"],
      [["--socket", "wss://sai.example/builder"], ENV, "--socket"],
      [["--socket", "127.0.0.1:4460"], ENV, "--socket"],
      [
        [],
        new Map([["SAI_BUILDER_RESOURCE_PROXY", "ws://h:1"]]),
        "SAI_BUILDER_RESOURCE_PROXY",
      ],
    ] as const
  ) {
    // The acquire, release and launcher forms alike.
    const forms = [
      [...args, "r", "1", "10"],
      [...args, "--release", "c"],
      [...args, "r", "1", "10", "--", "true"],
    ];
    for (const argv of forms) {
      assert.throws(
        () => parseCommand(argv, env),
        new RegExp(
          `^TypeError: ${from} must be the builder's Unix socket, a path or @NAME .*: a (URL|HOST:PORT .*) is what sai-builder --server takes$`,
        ),
        argv.join(" "),
      );
    }
  }
  for (
    const ok of [
      "/tmp/sai-0/b.sock",
      "@sai-builder",
      "./127.0.0.1:4460",
      "b.sock",
    ]
  ) {
    const c = parse(["r", "1", "10", "--socket", ok]);
    assert.ok(c.kind === "acquire" && c.socket === ok);
  }
});

Deno.test("`parseCommand()` takes --strict only with a release", () => {
  const c = parse(["--release", "c", "--strict"]);
  assert.ok(c.kind === "release");
  assert.equal(c.strict, true);
  assert.throws(() => parse(["r", "1", "10", "--strict"]), /--strict is for/);
});

Deno.test("`parseCommand()` accepts cookies of up to 255 characters", () => {
  const c = parse(["r", "1", "10", "x".repeat(255)]);
  assert.ok(c.kind === "acquire");
  assert.throws(
    () => parse(["r", "1", "10", "x".repeat(256)]),
    /COOKIE must be 1 to 255/,
  );
});

Deno.test("`parseCommand()` reads the owner flags of the holder form", () => {
  const owner = (...flags: string[]) => {
    const c = parse(["r", "1", "10", "c", ...flags]);
    assert.ok(c.kind === "acquire");
    return c.owner;
  };
  assert.deepEqual(owner(), { none: false });
  assert.deepEqual(owner("--owner-pid", "42"), { none: false, pid: 42 });
  assert.deepEqual(owner("--no-owner"), { none: true });
  assert.deepEqual(
    owner("--holder", "--owner-pid", "42", "--owner-start", "9001"),
    { none: false, pid: 42, start: 9001 },
  );
  assert.throws(() => owner("--owner-start", "x"), /--owner-start must be/);
  // Launcher, foreground and release are the process: no owner to follow.
  for (
    const args of [
      ["r", "1", "10", "--no-owner", "--", "true"],
      ["r", "1", "10", "--foreground", "--owner-pid", "42"],
      ["--release", "c", "--no-owner"],
    ]
  ) {
    assert.throws(() => parse(args), /is for the holder form/, args.join(" "));
  }
});

Deno.test("`parseCommand()` gives --release a deadline: 10 s, or --wait", () => {
  const wait = (...flags: string[]) => {
    const c = parse(["--release", "c", ...flags]);
    assert.ok(c.kind === "release");
    return c.waitSeconds;
  };
  assert.equal(wait(), 10);
  assert.equal(wait("--wait", "3"), 3);
  assert.throws(() => wait("--wait", "0"), /--wait/);
});

Deno.test("`parseCommand()` reads --check: a socket, a deadline of 5 s or --wait, nothing else", () => {
  assert.deepEqual(parse(["--check"]), {
    kind: "check",
    socket: "/tmp/b.sock",
    waitSeconds: 5,
  });
  assert.deepEqual(parse(["--check", "--socket", "@b", "--wait", "1", "-d0"]), {
    kind: "check",
    socket: "@b",
    waitSeconds: 1,
  });
  for (
    const args of [
      ["--check", "r", "1", "10"],
      ["--check", "--release", "c"],
      ["--check", "--priority=2"],
      ["--check", "--", "true"],
    ]
  ) {
    assert.throws(() => parse(args), /--check takes only --socket and --wait/);
  }
  assert.throws(() => parse(["--check"], new Map()), /no builder socket/);
});

/**
 * Deployment (issue 21, item 11): `make install` lays out the binaries,
 * the systemd units and their docs; `systemd-analyze verify` accepts the
 * units; and the units' own command lines, run as systemd would run them
 * (credentials, state and runtime directories, environment files), make a
 * working farm over TLS with tokens.  systemd itself is not init here, so
 * the units never run under it: see docs/deploy.md for what that leaves
 * untried.
 *
 * @module
 */

import assert from "node:assert/strict";
import { makeCertificates } from "./_certs.ts";
import { Proc, runClient, waitFor } from "./_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const UNITS = ["sai-server.service", "sai-builder.service"];

const HAVE_MAKE = await new Deno.Command("make", {
  args: ["--version"],
  stdout: "null",
}).output().then((o) => o.success, () => false);

const SYSTEMD_ANALYZE = await new Deno.Command("systemd-analyze", {
  args: ["--version"],
  stdout: "null",
}).output().then((o) => o.success, () => false);

if (!SYSTEMD_ANALYZE) {
  // deno-lint-ignore no-console -- says why tests are skipped
  console.error(
    "deploy_test: no systemd-analyze on this machine: the unit checks are skipped",
  );
}

async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const o = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd ?? ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: o.code, stdout: text(o.stdout), stderr: text(o.stderr) };
}

/** Stand-ins for the binaries `make build` makes (it cannot here: no denort). */
async function standInDist(dir: string): Promise<string> {
  const dist = `${dir}/dist`;
  await Deno.mkdir(dist);
  for (const b of ["sai-server", "sai-builder", "sai-resource"]) {
    await Deno.writeTextFile(`${dist}/${b}`, `#!/bin/sh\necho ${b}\n`);
    await Deno.chmod(`${dist}/${b}`, 0o755);
  }
  return dist;
}

/** `make install` with these variables. */
function makeInstall(vars: Record<string, string>) {
  return run("make", [
    "--no-print-directory",
    "install",
    ...Object.entries(vars).map(([k, v]) => `${k}=${v}`),
  ]);
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sai-deploy-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The `KEY=value` settings of a unit's [Service] section, in order. */
function settings(unit: string): [string, string][] {
  return unit.split("\n")
    .filter((l) => /^[A-Za-z]+=/.test(l))
    .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]);
}

Deno.test({
  name:
    "make install puts the binaries, the units (paths for PREFIX) and the docs under DESTDIR",
  ignore: !HAVE_MAKE,
  async fn() {
    await withDir(async (dir) => {
      const dist = await standInDist(dir);
      const dest = `${dir}/dest`;
      const got = await makeInstall({
        DIST: dist,
        DESTDIR: dest,
        PREFIX: "/opt/sai",
      });
      assert.equal(got.code, 0, got.stderr);
      for (const b of ["sai-server", "sai-builder", "sai-resource"]) {
        const info = await Deno.stat(`${dest}/opt/sai/bin/${b}`);
        assert.equal(info.mode! & 0o777, 0o755, b);
      }
      for (const u of UNITS) {
        const path = `${dest}/opt/sai/lib/systemd/system/${u}`;
        assert.equal((await Deno.stat(path)).mode! & 0o777, 0o644);
        const text = await Deno.readTextFile(path);
        const exec = settings(text).find(([k]) => k === "ExecStart")![1];
        // For the installed system: PREFIX, never DESTDIR.
        assert.match(exec, new RegExp(`^/opt/sai/bin/${u.split(".")[0]} `));
        assert.doesNotMatch(text, /\/usr\/local\//);
        assert.ok(!text.includes(dest), "no DESTDIR in the unit");
        assert.match(
          text,
          /^Documentation=file:\/opt\/sai\/share\/doc\/sai-resource\/deploy\.md$/m,
        );
      }
      const doc = `${dest}/opt/sai/share/doc/sai-resource`;
      await Deno.stat(`${doc}/deploy.md`);
      await Deno.stat(`${doc}/examples/sai-server.conf.json`);

      // make uninstall takes back what it put, and only that.
      await Deno.writeTextFile(`${dest}/opt/sai/bin/other`, "");
      const un = await run("make", [
        "--no-print-directory",
        "uninstall",
        `DIST=${dist}`,
        `DESTDIR=${dest}`,
        "PREFIX=/opt/sai",
      ]);
      assert.equal(un.code, 0, un.stderr);
      const left = [];
      for await (const e of Deno.readDir(`${dest}/opt/sai/bin`)) {
        left.push(e.name);
      }
      assert.deepEqual(left, ["other"]);
      assert.equal(await Deno.stat(doc).catch(() => null), null);
      for (const u of UNITS) {
        assert.equal(
          await Deno.stat(`${dest}/opt/sai/lib/systemd/system/${u}`).catch(
            () => null,
          ),
          null,
        );
      }

      // Without the binaries it says what to do, and installs nothing.
      await Deno.remove(`${dist}/sai-builder`);
      const missing = await makeInstall({
        DIST: dist,
        DESTDIR: `${dir}/dest2`,
      });
      assert.notEqual(missing.code, 0);
      assert.match(
        missing.stderr,
        /^make install: \S+\/dist\/sai-builder is missing: run 'make build' first/m,
      );
      assert.equal(await Deno.stat(`${dir}/dest2`).catch(() => null), null);
    });
  },
});

Deno.test({
  name:
    "systemd-analyze verify accepts the installed units, and the hardening scores OK",
  ignore: !HAVE_MAKE || !SYSTEMD_ANALYZE,
  async fn() {
    await withDir(async (dir) => {
      // verify wants each ExecStart binary to exist: PREFIX in the temp
      // dir points the units at the installed stand-ins.
      const prefix = `${dir}/prefix`;
      const got = await makeInstall({
        DIST: await standInDist(dir),
        PREFIX: prefix,
      });
      assert.equal(got.code, 0, got.stderr);
      const units = UNITS.map((u) => `${prefix}/lib/systemd/system/${u}`);
      // verify exits 0 on what it merely warns of: any output is a finding.
      const verify = await run("systemd-analyze", ["verify", ...units]);
      assert.equal(verify.code, 0, verify.stderr);
      assert.equal(verify.stdout + verify.stderr, "");

      // The check itself sees a broken unit.
      const bad = `${dir}/sai-server.service`;
      await Deno.writeTextFile(
        bad,
        (await Deno.readTextFile(units[0]!)).replace(
          "Restart=on-failure",
          "Restart=on-failur",
        ),
      );
      const caught = await run("systemd-analyze", ["verify", bad]);
      assert.match(caught.stderr, /restart specifier/);

      for (const unit of units) {
        const sec = await run("systemd-analyze", [
          "security",
          "--offline=true",
          unit,
        ]);
        const m = /Overall exposure level for \S+: (\d+\.\d+)/.exec(sec.stdout);
        assert.ok(m, sec.stdout + sec.stderr);
        assert.ok(Number(m[1]) <= 2.5, `${unit}: exposure ${m[1]}`);
      }
    });
  },
});

/**
 * Runs a unit's ExecStart from source, as systemd would run it: its
 * Environment= then EnvironmentFile= (which wins), LoadCredential= copies
 * in a credentials directory (`%d`), `%t` the runtime root, and the
 * directories it asks for.  `/etc/` paths are `etc`'s.  `replace` swaps
 * words for this machine.
 */
async function startUnit(
  unitName: string,
  fs: { root: string; replace?: Record<string, string> },
): Promise<Proc> {
  const unit = await Deno.readTextFile(`${ROOT}deploy/systemd/${unitName}`);
  const local = (path: string) =>
    path.replace(/^\/(etc|run|var)\//, `${fs.root}/$1/`);
  const env: Record<string, string> = {};
  const creds = `${fs.root}/credentials/${unitName}`;
  await Deno.mkdir(creds, { recursive: true, mode: 0o700 });
  let exec = "";
  for (const [key, value] of settings(unit)) {
    if (key === "Environment") {
      const [k, ...v] = value.split("=");
      env[k!] = v.join("=");
    } else if (key === "EnvironmentFile") {
      const optional = value.startsWith("-");
      const text = await Deno.readTextFile(local(value.replace(/^-/, "")))
        .catch((err) => {
          if (optional) return "";
          throw err;
        });
      for (const line of text.split("\n")) {
        const m = /^([A-Z_]+)=(.*)$/.exec(line);
        if (m) env[m[1]!] = m[2]!;
      }
    } else if (key === "LoadCredential") {
      const [id, path] = value.split(":") as [string, string];
      await Deno.copyFile(local(path), `${creds}/${id}`);
    } else if (key === "StateDirectory") {
      env.STATE_DIRECTORY = `${fs.root}/var/lib/${value}`;
      await Deno.mkdir(env.STATE_DIRECTORY, { recursive: true, mode: 0o700 });
    } else if (key === "RuntimeDirectory") {
      env.RUNTIME_DIRECTORY = `${fs.root}/run/${value}`;
      await Deno.mkdir(env.RUNTIME_DIRECTORY, { recursive: true });
      await Deno.chmod(env.RUNTIME_DIRECTORY, 0o755);
    } else if (key === "ExecStart") exec = value;
  }
  const words: string[] = [];
  for (const word of exec.split(/\s+/)) {
    const whole = /^\$([A-Z_]+)$/.exec(word);
    if (whole) {
      // $VAR alone: its value split into words, nothing if empty.
      words.push(...(env[whole[1]!] ?? "").split(/\s+/).filter(Boolean));
      continue;
    }
    const expanded = word
      .replace(/\$\{([A-Z_]+)\}/g, (_, k) => env[k] ?? "")
      .replace(/%d/g, creds)
      .replace(/%t/g, `${fs.root}/run`);
    words.push(fs.replace?.[expanded] ?? local(expanded));
  }
  const program = words.shift()!;
  const entry = { "/usr/local/bin/sai-server": "server.ts" }[program] ??
    { "/usr/local/bin/sai-builder": "builder.ts" }[program];
  assert.ok(entry, `unexpected ExecStart binary ${program}`);
  return new Proc([entry, ...words], { env });
}

Deno.test("the units' command lines, run as systemd runs them, make a farm: TLS, tokens, state file, group socket", async () => {
  await withDir(async (root) => {
    // What docs/deploy.md has the operator put in /etc.
    const etc = `${root}/etc`;
    await Deno.mkdir(`${etc}/sai/tls`, { recursive: true });
    await Deno.mkdir(`${etc}/default`);
    await makeCertificates(`${etc}/sai/tls`);
    await Deno.copyFile(
      `${ROOT}examples/sai-server.conf.json`,
      `${etc}/sai/sai-server.conf.json`,
    );
    const token = "builder-token-0123456789abcdef";
    // Bound to the builder's name, as docs/deploy.md has it.
    await Deno.writeTextFile(`${etc}/sai/builder-tokens`, `farm-b1:${token}\n`);
    await Deno.writeTextFile(`${etc}/sai/builder-token`, `${token}\n`);
    await Deno.writeTextFile(
      `${etc}/sai/admin-token`,
      "admin-token-0123456789\n",
    );
    // A free port: the state file is per address, and port 0 has none.
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = probe.addr.port;
    probe.close();
    await Deno.writeTextFile(
      `${etc}/default/sai-server`,
      `SAI_LISTEN=127.0.0.1:${port}\n`,
    );
    await Deno.writeTextFile(
      `${etc}/default/sai-builder`,
      `SAI_SERVER=wss://127.0.0.1:${port}\nSAI_BUILDER_ARGS=--ca ${etc}/sai/tls/ca.pem --name farm-b1\n`,
    );

    const server = await startUnit("sai-server.service", { root });
    let builder: Proc | undefined;
    try {
      await server.stdout.wait(
        new RegExp(
          `listening on wss://127\\.0\\.0\\.1:${port} \\(resources warmcat_conns=32,db=4`,
        ),
      );
      // The group the doc creates ("sai") is this user's own here.
      const gid = String(Deno.gid());
      builder = await startUnit("sai-builder.service", {
        root,
        replace: { sai: gid },
      });
      const [, socket] = await builder.stdout.wait(
        /SAI_BUILDER_RESOURCE_PROXY=(\S+)/,
      );
      assert.equal(socket, `${root}/run/sai-builder/builder.sock`);
      const info = await Deno.stat(socket!);
      assert.equal(info.mode! & 0o777, 0o660);
      assert.equal(String(info.gid), gid);

      const leased = await runClient(["db", "2", "30", "--", "true"], {
        SAI_BUILDER_RESOURCE_PROXY: socket!,
      });
      assert.equal(leased.code, 0, leased.stderr);

      // The state file under StateDirectory=, and the admin API over TLS.
      const state =
        `${root}/var/lib/sai-server/sai-server/127.0.0.1_${port}.json`;
      assert.equal(JSON.parse(await Deno.readTextFile(state)).version, 2);
      const client = Deno.createHttpClient({
        caCerts: [await Deno.readTextFile(`${etc}/sai/tls/ca.pem`)],
      });
      try {
        const set = await fetch(
          `https://127.0.0.1:${port}/api/resources/db`,
          {
            method: "POST",
            headers: { authorization: "Bearer admin-token-0123456789" },
            body: '{"budget":6}',
            client,
          },
        );
        assert.equal(set.status, 200);
        assert.equal((await set.json()).persisted, true);
        const status = await fetch(`https://127.0.0.1:${port}/api/status`, {
          client,
        });
        const doc = await status.json();
        assert.deepEqual(doc.builders.map((b: { name: string }) => b.name), [
          "farm-b1",
        ]);
        assert.equal(doc.stats.grants, 1);
      } finally {
        client.close();
      }
      // ExecReload= is a SIGHUP.
      server.kill("SIGHUP");
      await server.stderr.wait(
        /SIGHUP: budget set through the admin API kept resname=db/,
      );
    } finally {
      await builder?.stop();
      await server.stop();
    }
    await waitFor(
      "the builder's socket to go",
      async () =>
        await Deno.stat(`${root}/run/sai-builder/builder.sock`).then(
          () => false,
          () => true,
        ),
    );
  });
});

/**
 * `make build`'s compile step (`scripts/compile.ts`) when `deno compile`
 * cannot get its runtime: offline, through a `DENORT_BIN` that is not there.
 *
 * @module
 */

import assert from "node:assert/strict";
import { denortAdvice } from "../scripts/compile.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("compile.ts says in two lines to set DENORT_BIN, and leaves no empty dist/", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const out = `${tmp}/dist/sai-resource`;
    const got = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "-A", "scripts/compile.ts", out],
      cwd: ROOT,
      env: { DENORT_BIN: `${tmp}/no-denort`, RUST_BACKTRACE: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(got.stderr);
    assert.equal(got.code, 1, stderr);
    // The command it ran, with sai-resource's permissions.
    assert.match(
      new TextDecoder().decode(got.stdout),
      /^deno compile --allow-read .*--allow-run .* -o \S+\/sai-resource client\.ts$/m,
    );
    const lines = stderr.trimEnd().split("\n");
    assert.equal(lines.length, 2, stderr);
    assert.match(
      lines[0]!,
      /cannot compile .*: DENORT_BIN=".*no-denort" is not usable/,
    );
    assert.match(
      lines[1]!,
      /set DENORT_BIN to the denort of Deno \d+\.\d+\.\d+/,
    );
    assert.doesNotMatch(stderr, /backtrace/i);
    assert.equal(await Deno.stat(`${tmp}/dist`).catch(() => null), null);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("denortAdvice() names the download that failed", () => {
  // What deno 2.9 prints without a network, less the backtrace.
  const stderr =
    `error: Writing deno compile executable to temporary file 'dist/sai-server.tmp-1'

Caused by:
    0: Setting up base binary.
    1: error sending request for url (https://dl.deno.land/release/v2.9.6/denort-x86_64-unknown-linux-gnu.zip): client error (Connect): dns error: failed to lookup address information: Name or service not known
    2: client error (Connect)
    3: dns error
`;
  const advice = denortAdvice(stderr, {
    out: "dist/sai-server",
    denortBin: undefined,
  });
  assert.equal(
    advice?.split("\n")[0],
    "make: cannot compile dist/sai-server: it could not download the Deno runtime, denort from dl.deno.land (dns error: failed to lookup address information: Name or service not known)",
  );
  assert.equal(
    denortAdvice("error: Type checking failed", {
      out: "x",
      denortBin: undefined,
    }),
    undefined,
  );
});

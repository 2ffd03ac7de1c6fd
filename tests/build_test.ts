/**
 * `make build` when `deno compile` cannot get its runtime: offline, through
 * a `DENORT_BIN` that is not there.
 *
 * @module
 */

import assert from "node:assert/strict";
import { denortAdvice } from "../scripts/compile.ts";

const ROOT = new URL("..", import.meta.url).pathname;

const HAVE_MAKE = await new Deno.Command("make", {
  args: ["--version"],
  stdout: "null",
}).output().then((o) => o.success, () => false);

Deno.test({
  name:
    "make build says in two lines to set DENORT_BIN, and leaves no empty dist/",
  ignore: !HAVE_MAKE,
  async fn() {
    const tmp = await Deno.makeTempDir();
    try {
      const dist = `${tmp}/dist`;
      const got = await new Deno.Command("make", {
        args: [
          "--no-print-directory",
          // The page asset is deno task test's to refresh: a make run here
          // must not rewrite the tree under the other tests, nor print it.
          "--old-file=src/server/_web_asset.ts",
          "build",
          `DIST=${dist}`,
          `DENO=${Deno.execPath()}`,
          `DENORT_BIN=${tmp}/no-denort`,
        ],
        cwd: ROOT,
        env: { RUST_BACKTRACE: "1", NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(got.stdout);
      const stderr = new TextDecoder().decode(got.stderr);
      assert.notEqual(got.code, 0, stderr);
      // The command it ran, with sai-server's permissions from the one list.
      assert.match(
        stdout,
        /^deno compile --allow-net --allow-read --allow-write --allow-env -o \S+\/dist\/sai-server server\.ts$/m,
      );
      // Ours, then make's own "*** [...] Error 1".
      // Under `make test` this make is a sub-make: "make[1]: ***".
      const lines = stderr.trimEnd().split("\n").filter((l) =>
        !/^make(\[\d+\])?: \*\*\*/.test(l)
      );
      assert.equal(lines.length, 2, stderr);
      assert.match(
        lines[0]!,
        /^make: cannot compile \S+\/sai-server: DENORT_BIN=".*no-denort" is not usable \(Could not find denort/,
      );
      assert.match(
        lines[1]!,
        /^make: set DENORT_BIN to the denort of Deno \d+\.\d+\.\d+ /,
      );
      assert.doesNotMatch(stderr, /backtrace/i);
      assert.equal(await Deno.stat(dist).catch(() => null), null);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
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

// deno-lint-ignore-file no-console -- a developer script: printing is its job
/**
 * `make run`: a server with an example budget plus a builder, from source,
 * until Ctrl-C.  Prints the line to export for `sai-resource`.  Each program
 * runs with its compiled binary's permissions.
 *
 * Environment: `SAI_RESOURCES` (default `warmcat_conns=4`) and `SAI_LISTEN`
 * (default `127.0.0.1:4460`), the server's `--resources` and `--listen`;
 * `SAI_NAME`, the builder's `--name` (default `local-PORT`, from the
 * server's address: see {@linkcode localBuilderName}).  The builder's socket
 * follows its name, so two `make run`s on other `SAI_LISTEN`s run side by
 * side.
 *
 * @module
 */

import { type Program, PROGRAMS } from "../src/shared/permissions.ts";
import { NAME_PATTERN } from "../src/protocol/protocol.ts";

const root = new URL("..", import.meta.url).pathname;

/**
 * The builder's name for the server at `url` (`ws://HOST:PORT`, as the
 * server printed it, so port 0 gives the port it picked): `SAI_NAME` if
 * given, else `local-PORT`, or `local-HOST-PORT` off 127.0.0.1.  The
 * builder's default socket is named after it.  Throws `TypeError` for a
 * `SAI_NAME` the builder would refuse.
 */
export function localBuilderName(url: string, sainame?: string): string {
  if (sainame !== undefined && sainame !== "") {
    if (!NAME_PATTERN.test(sainame)) {
      throw new TypeError(
        `SAI_NAME must match ${NAME_PATTERN.source}, got "${sainame}"`,
      );
    }
    return sainame;
  }
  const { hostname, port } = new URL(url);
  const bare = hostname.replace(/^\[|\]$/g, "");
  const host = bare === "127.0.0.1" || bare === "localhost"
    ? ""
    : `${bare.replace(/[^A-Za-z0-9_.-]/g, "_")}-`;
  return `local-${host}${port}`.slice(0, 64);
}

/** `deno run` with `program`'s permissions, as the tests run it. */
function runArgs(program: Program): string[] {
  const { entry, permissions } = PROGRAMS[program];
  return ["run", ...permissions, "--quiet", entry];
}

function spawn(program: Program, args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [...runArgs(program), ...args],
    cwd: root,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

/** Relays a child's stdout and resolves with the first match of `re`. */
function relay(
  child: Deno.ChildProcess,
  re: RegExp,
): Promise<RegExpMatchArray> {
  const { promise, resolve, reject } = Promise.withResolvers<
    RegExpMatchArray
  >();
  (async () => {
    let seen = "";
    for await (
      const chunk of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      Deno.stdout.writeSync(new TextEncoder().encode(chunk));
      seen += chunk;
      const m = seen.match(re);
      if (m) resolve(m);
    }
    reject(new Error("exited before it was ready"));
  })();
  return promise;
}

/** Runs the server and the builder until SIGINT or SIGTERM. */
export async function main(): Promise<void> {
  const resources = Deno.env.get("SAI_RESOURCES") ?? "warmcat_conns=4";
  const listen = Deno.env.get("SAI_LISTEN") ?? "127.0.0.1:4460";
  const server = spawn("sai-server", [
    "--resources",
    resources,
    "--listen",
    listen,
  ]);
  const children = [server];
  const stop = () => {
    for (const c of children) {
      try {
        c.kill("SIGTERM");
      } catch { /* gone */ }
    }
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    const [, url] = await relay(server, /listening on (ws:\/\/\S+)/).catch(
      (err) => {
        throw new Error(
          `sai-server ${err.message}; SAI_LISTEN=HOST:PORT and SAI_RESOURCES=NAME=BUDGET,... change its --listen (now "${listen}") and --resources (now "${resources}")`,
        );
      },
    );
    const name = localBuilderName(url!, Deno.env.get("SAI_NAME"));
    const builder = spawn("sai-builder", ["--server", url!, "--name", name]);
    children.push(builder);
    const [line] = await relay(builder, /SAI_BUILDER_RESOURCE_PROXY=\S+/)
      .catch((err) => {
        throw new Error(
          `sai-builder "${name}" ${err.message}; SAI_NAME=NAME names it (and its socket) otherwise`,
        );
      });
    const status = url!.replace(/^ws/, "http");
    // The binary when `make build` made it, else from source.
    const built = await Deno.stat(`${root}dist/sai-resource`).then(
      () => true,
      () => false,
    );
    const client = built
      ? "dist/sai-resource"
      : `deno ${runArgs("sai-resource").slice(0, -2).join(" ")} client.ts`;
    const [resname] = resources.split(/[=,]/);
    console.log(`
Ready: builder "${name}".  In another shell:
  export ${line}
  ${client} ${resname} 1 30
Status: ${status}/   (JSON: /api/status)
Ctrl-C stops both.`);
  } catch (err) {
    console.error(`make run: ${(err as Error).message}`);
    stop();
  }
  const codes = await Promise.all(children.map((c) => c.status));
  Deno.exit(codes.some((s) => !s.success && s.signal !== "SIGTERM") ? 1 : 0);
}

if (import.meta.main) await main();

// deno-lint-ignore-file no-console -- a developer script: printing is its job
/**
 * `make run`: a server with an example budget plus a builder, from source,
 * until Ctrl-C.  Prints the line to export for `sai-resource`.
 *
 * @module
 */

const root = new URL("..", import.meta.url).pathname;
const resources = Deno.env.get("SAI_RESOURCES") ?? "warmcat_conns=4";
const listen = Deno.env.get("SAI_LISTEN") ?? "127.0.0.1:4460";

function spawn(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", ...args],
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

const server = spawn([
  "server.ts",
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
  const [, url] = await relay(server, /listening on (ws:\/\/\S+)/);
  const builder = spawn(["builder.ts", "--server", url!, "--name", "local"]);
  children.push(builder);
  const [line] = await relay(builder, /SAI_BUILDER_RESOURCE_PROXY=\S+/);
  const port = url!.split(":").at(-1);
  console.log(`
Ready.  In another shell:
  export ${line}
  deno run -A client.ts warmcat_conns 1 30   # or dist/sai-resource
Status: http://127.0.0.1:${port}/   (JSON: /api/status)
Ctrl-C stops both.`);
} catch (err) {
  console.error(`make run: ${(err as Error).message}`);
  stop();
}
const codes = await Promise.all(children.map((c) => c.status));
Deno.exit(codes.some((s) => !s.success && s.signal !== "SIGTERM") ? 1 : 0);

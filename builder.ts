// deno-lint-ignore-file no-console -- an entry point: printing is its job
/**
 * `sai-builder`: keeps one connection to the server and proxies
 * `sai-resource` requests to it from a Unix socket.
 *
 * @module
 */

import { startBuilder } from "./src/builder/builder_app.ts";
import { defaultSocketPath } from "./src/builder/socket_listen.ts";
import { Logger, parseLevel } from "./src/shared/log.ts";
import {
  type FlagOptions,
  parseFlags,
  parseLogFormat,
  readFlagFile,
  secondsInRange,
  wantsHelp,
} from "./src/shared/cli_flags.ts";
import { startErrorMessage } from "./src/shared/listen_error.ts";
import { NAME_PATTERN } from "./src/protocol/protocol.ts";

const USAGE =
  `usage: sai-builder --server ws[s]://HOST:PORT [--socket PATH|@NAME] [--name NAME]
                   [--token-file FILE] [--ca FILE] [--socket-group GROUP]
                   [--heartbeat SECONDS] [--request-timeout SECONDS]
                   [--log-level error|warn|info|debug] [--log-format text|json]`;

const OPTIONS = {
  server: { type: "string" },
  socket: { type: "string" },
  name: { type: "string" },
  "log-level": { type: "string", default: "info" },
  "log-format": { type: "string", default: "text" },
  "token-file": { type: "string" },
  ca: { type: "string" },
  "socket-group": { type: "string" },
  heartbeat: { type: "string", default: "10" },
  "request-timeout": { type: "string", default: "10" },
} as const satisfies FlagOptions;

/** Runs `sai-builder` until SIGINT or SIGTERM. */
export async function main(args: string[]): Promise<void> {
  if (wantsHelp(args, OPTIONS)) {
    console.log(USAGE);
    return;
  }
  let options;
  try {
    const { values, positionals } = parseFlags({
      args,
      strict: true,
      allowPositionals: true,
      options: OPTIONS,
    });
    if (positionals.length > 0) {
      throw new TypeError(`unexpected argument "${positionals[0]}"`);
    }
    if (!values.server || !/^wss?:\/\/[^/]+/.test(values.server)) {
      throw new TypeError(
        `--server must be ws://HOST:PORT, got ${
          values.server ? `"${values.server}"` : "nothing"
        }`,
      );
    }
    const name = values.name ?? Deno.hostname().split(".")[0]!.slice(0, 64);
    if (!NAME_PATTERN.test(name)) {
      throw new TypeError(
        `--name must match ${NAME_PATTERN.source}, got "${name}"`,
      );
    }
    const format = parseLogFormat(values["log-format"]);
    let token: string | undefined;
    if (values["token-file"] !== undefined) {
      token = (await readFlagFile("--token-file", values["token-file"])).trim();
      if (token === "") {
        throw new TypeError(`--token-file "${values["token-file"]}" is empty`);
      }
    }
    options = {
      ...(token !== undefined && { token }),
      ...(values.ca !== undefined &&
        { ca: await readFlagFile("--ca", values.ca) }),
      ...(values["socket-group"] !== undefined &&
        { socketGroup: values["socket-group"] }),
      heartbeat: secondsInRange("--heartbeat", values.heartbeat, {
        min: 0.1,
        max: 3600,
      }),
      requestTimeoutMs: secondsInRange(
        "--request-timeout",
        values["request-timeout"],
        { min: 0.1, max: 3600 },
      ) * 1000,
      server: values.server,
      name,
      socketPath: values.socket ?? defaultSocketPath(name),
      socketFallback: values.socket === undefined,
      logger: new Logger(parseLevel(values["log-level"]), { format }),
    };
  } catch (err) {
    console.error(`sai-builder: ${(err as Error).message}\n${USAGE}`);
    Deno.exit(2);
  }
  let builder;
  try {
    builder = await startBuilder(options);
  } catch (err) {
    console.error(
      `sai-builder: ${startErrorMessage(err, options.socketPath)}`,
    );
    Deno.exit(err instanceof TypeError ? 2 : 1);
  }

  console.log(`SAI_BUILDER_RESOURCE_PROXY=${builder.socketPath}`);
  const { promise: stopped, resolve } = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGINT", resolve);
  Deno.addSignalListener("SIGTERM", resolve);
  // Another live builder has our name (a cloned machine): retrying cannot
  // help while it lives, and a builder that never links only stalls its
  // clients.
  const refused = await Promise.race([stopped, builder.refused]);
  await builder.shutdown();
  if (refused) {
    console.error(`sai-builder: ${refused.message}`);
    Deno.exit(1);
  }
  Deno.exit(0);
}

if (import.meta.main) await main(Deno.args);

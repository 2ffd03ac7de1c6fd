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
import {
  formatHelp,
  type Help,
  usageError,
  versionLine,
  wantsVersion,
} from "./src/shared/help.ts";

/** Everything `sai-builder --help` says. */
export const HELP: Help = {
  usage: [
    "sai-builder --server ws[s]://HOST:PORT [OPTIONS]",
    "sai-builder --help | --version",
  ],
  about:
    "Keeps one link to sai-server and listens on a Unix socket for sai-resource clients (tests), passing their requests on.  Once listening it prints SAI_BUILDER_RESOURCE_PROXY=PATH on stdout: export that to the tests.",
  options: [
    {
      flag: "--server URL",
      text: "the server's ws:// or wss:// URL (required)",
    },
    {
      flag: "--socket PATH|@NAME",
      text:
        "where clients connect; @NAME is an abstract socket, open to every local user",
      default:
        "$XDG_RUNTIME_DIR/sai/NAME.sock, else /tmp/sai-UID/NAME.sock (a private directory if another user made that one)",
    },
    {
      flag: "--name NAME",
      text: "how the server shows this builder; unique among live builders",
      default: "the host name",
    },
    {
      flag: "--token-file FILE",
      text: "the token the server's --builder-tokens expects",
    },
    {
      flag: "--ca FILE",
      text: "CA certificate(s) to trust for a wss:// server",
    },
    {
      flag: "--socket-group GROUP",
      text: "open the socket to a group (modes 0770/0660)",
    },
    {
      flag: "--heartbeat SECONDS",
      text: "a server silent this long counts as lost (0.1 to 3600)",
      default: "10",
    },
    {
      flag: "--request-timeout SECONDS",
      text: "time a client has to send its request (0.1 to 3600)",
      default: "10",
    },
    {
      flag: "--log-level LEVEL",
      text: "error, warn, info or debug",
      default: "info",
    },
    {
      flag: "--log-format text|json",
      text: "log lines on stderr",
      default: "text",
    },
    { flag: "-h, --help", text: "this text" },
    { flag: "--version", text: "the version, and Deno's" },
  ],
  environment: [
    ["XDG_RUNTIME_DIR", "where the default socket goes"],
    ["NO_COLOR", "no colour in the log"],
  ],
  exitCodes: [
    ["0", "stopped by SIGINT or SIGTERM"],
    [
      "1",
      "could not start (the socket is unsafe or in use), or another live builder has its name",
    ],
    ["2", "usage error"],
  ],
  more: "See README.md and docs/reliability.md.",
};

/** The command line's options (each is in {@linkcode HELP}: a test checks). */
export const OPTIONS = {
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
    console.log(formatHelp(HELP));
    return;
  }
  if (wantsVersion(args)) {
    console.log(versionLine("sai-builder"));
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
    console.error(usageError("sai-builder", (err as Error).message));
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

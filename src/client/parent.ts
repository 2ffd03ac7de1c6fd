/**
 * The process ctest runs: it spawns the holder, relays its progress to
 * stderr, and exits 0 once the holder has the lease.
 *
 * @module
 */

import { specAmounts, specNames } from "./lease_client.ts";
import type { Command } from "./client_args.ts";
import { holderCommand, type HolderReport } from "./holder.ts";
import { encoder, EXIT_FAILED, EXIT_OK, printErr } from "./_common.ts";
import { chooseOwner, describeOwner } from "./owner_watch.ts";
import { linkLine } from "./link_line.ts";

/** Runs the caller's side of an acquire; returns the exit code. */
export async function runParent(
  command: Extract<Command, { kind: "acquire" }>,
): Promise<number> {
  const { spec, quiet } = command;
  // Whose lease this is: decided here, where the caller's process tree is.
  const owner = chooseOwner({
    parent: Deno.ppid,
    noOwner: command.owner.none,
    ...(command.owner.pid !== undefined && { ownerPid: command.owner.pid }),
  });
  // The holder must use the same cookie and socket we settled on.
  const holderArgs = [
    ...(spec.resources
      ? [spec.resources.map((r) => `${r.resname}=${r.amount}`).join(",")]
      : [spec.resname, String(spec.amount)]),
    String(spec.lease),
    spec.cookie,
    "--socket",
    command.socket,
    "--wait",
    String(command.waitSeconds),
    ...(spec.priority ? [`--priority=${spec.priority}`] : []),
    ...(owner.kind === "watch"
      ? [
        "--owner-pid",
        String(owner.owner.pid),
        "--owner-start",
        String(owner.owner.start),
      ]
      : ["--no-owner"]),
  ];
  const { exe, args: argv } = holderCommand(holderArgs);
  const child = new Deno.Command(exe, {
    args: argv,
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
    detached: true,
  }).spawn();
  if (command.verbose) {
    printErr(
      `holder pid ${child.pid} asks the builder at "${command.socket}" for ${
        specAmounts(spec)
      } (cookie ${spec.cookie})`,
    );
  }
  const writer = child.stdin.getWriter();
  // Backstop: a holder that never reports is killed, which withdraws it.
  const backstop = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, command.waitSeconds * 1000 + 10_000);
  let lastProgress = "";
  try {
    for await (const report of readReports(child.stdout)) {
      if (report.event === "queued") {
        const line =
          `queued for ${specNames(spec)}: position ${report.position}` +
          (report.eta >= 0 ? `, about ${report.eta} s` : "");
        if (!quiet && line !== lastProgress) printErr(line);
        lastProgress = line;
        continue;
      }
      if (report.event === "link") {
        if (!quiet) printErr(linkLine(report.link));
        continue;
      }
      if (report.event === "granted") {
        await writer.write(encoder.encode("ok\n"));
        await writer.close();
        child.unref();
        if (!quiet) {
          printErr(
            `granted ${
              specAmounts(spec)
            } for ${spec.lease} s (cookie ${spec.cookie})` +
              (owner.kind === "watch"
                ? `; held while ${describeOwner(owner.owner)} runs`
                : ""),
          );
        }
        if (owner.kind === "none" && owner.reason) {
          printErr(
            `${owner.reason}: the holder keeps the lease until it is released or expires`,
          );
        }
        Deno.stdout.writeSync(encoder.encode(spec.cookie + "\n"));
        return EXIT_OK;
      }
      printErr(report.message);
      return EXIT_FAILED;
    }
    const status = await child.status;
    printErr(
      `the holder exited (code ${status.code}) before the lease was granted`,
    );
    return EXIT_FAILED;
  } finally {
    clearTimeout(backstop);
  }
}

async function* readReports(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<HolderReport> {
  let pending = "";
  const decoder = new TextDecoder();
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      pending += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (line.trim()) yield JSON.parse(line) as HolderReport;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

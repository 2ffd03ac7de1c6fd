/**
 * The one list of what each program may do.  `make build` compiles each
 * binary with exactly these flags (through `scripts/compile.ts`), and the
 * black-box tests run each program from source with the same flags (through
 * `tests/_harness.ts`), so a permission the binaries lack fails a test here
 * rather than on a user's builder.
 *
 * @module
 */

/** A program, by the name of its binary. */
export type Program = "sai-server" | "sai-builder" | "sai-resource";

/** A program's entry point and its `deno run` / `deno compile` flags. */
export interface ProgramSpec {
  /** The entry point, relative to the repository root. */
  entry: string;
  permissions: readonly string[];
}

/** Each program's entry point and permissions. */
export const PROGRAMS: Readonly<Record<Program, ProgramSpec>> = {
  "sai-server": {
    entry: "server.ts",
    // Read: --config, --cert, --key, the token files.  Write: the state
    // file, and the private Unix socket its HTTP routes listen on.
    permissions: [
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
    ],
  },
  "sai-builder": {
    entry: "builder.ts",
    // Write: its Unix socket (and the directory for it).  Sys: the host
    // name is the default --name, the uid names the default socket dir.
    permissions: [
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys=uid,hostname",
    ],
  },
  "sai-resource": {
    entry: "client.ts",
    // All: the holder's owner watch reads /proc/PID/stat, which Deno allows
    // only with every permission.  It adds no power in effect: sai-resource
    // already runs any command (--allow-run: it re-spawns itself as the
    // holder, and launches CMD after --).
    permissions: ["--allow-all"],
  },
};

/** The program whose entry point is `entry` (`"client.ts"`), if any. */
export function programOf(entry: string): Program | undefined {
  const name = entry.split("/").at(-1);
  return (Object.keys(PROGRAMS) as Program[]).find((p) =>
    PROGRAMS[p].entry === name
  );
}

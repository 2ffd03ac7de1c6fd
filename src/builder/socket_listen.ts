/**
 * The builder's Unix socket: where it goes by default, the checks that keep
 * another local user from swapping it (as ssh-agent and tmux do), and the
 * listening itself, on a path or on a Linux abstract name (`@NAME`).
 *
 * @module
 */

import { isAbstract, unixPath } from "../shared/socket_path.ts";

/** Finds a group's id in /etc/group; accepts a numeric id as is. */
async function groupId(group: string): Promise<number> {
  if (/^[0-9]+$/.test(group)) return Number(group);
  const text = await Deno.readTextFile("/etc/group");
  for (const line of text.split("\n")) {
    const [name, , gid] = line.split(":");
    if (name === group && gid !== undefined) return Number(gid);
  }
  throw new TypeError(`Cannot use --socket-group: no group named "${group}"`);
}

/** Picks the default socket path for a builder name. */
export function defaultSocketPath(name: string): string {
  const runtime = Deno.env.get("XDG_RUNTIME_DIR");
  const dir = runtime ? `${runtime}/sai` : `/tmp/sai-${Deno.uid() ?? "user"}`;
  return `${dir}/${name}.sock`;
}

/** Thrown when the socket's directory could be tampered with by others. */
export class UnsafeSocketDirError extends Error {
  override name = "UnsafeSocketDirError";
}

/**
 * Refuses a socket directory another user could swap the socket in (as
 * ssh-agent and tmux do): it must be ours and not writable by group or
 * others (the group only with --socket-group, for that group), unless it
 * is sticky, as /tmp is, where nobody but the directory's owner (and root)
 * can remove or rename our file: so a sticky one must be ours or root's.
 */
function checkSocketDir(
  dir: string,
  info: Deno.FileInfo,
  gid: number | undefined,
): void {
  const mode = info.mode ?? 0;
  const uid = Deno.uid();
  const fix =
    `; remove it (or make it yours, mode 0700), or pass --socket in a directory only you can write`;
  if (!info.isDirectory) {
    throw new UnsafeSocketDirError(
      `Cannot use socket directory "${dir}": it is not a directory`,
    );
  }
  // The owner of a sticky directory may still delete anyone's file in it
  // and bind its own socket there: only root's (as /tmp is) or ours is safe.
  const sticky = (mode & 0o1000) !== 0;
  if (uid !== null && info.uid !== uid && !(sticky && info.uid === 0)) {
    throw new UnsafeSocketDirError(
      `Cannot use socket directory "${dir}": it is owned by uid ${info.uid}, not by this user (uid ${uid})${
        sticky ? " or root, and its owner may remove anyone's files in it" : ""
      }${fix}`,
    );
  }
  if (sticky) return;
  const groupOk = gid !== undefined && info.gid === gid;
  if ((mode & 0o002) || ((mode & 0o020) && !groupOk)) {
    throw new UnsafeSocketDirError(
      `Cannot use socket directory "${dir}": it is writable by ${
        mode & 0o002 ? "others" : "its group"
      } (mode ${(mode & 0o7777).toString(8).padStart(4, "0")})${fix}`,
    );
  }
}

/**
 * Makes the socket's directory (mode 0700 if we create it), checks that
 * nobody else can write in it, and clears a stale socket file; throws if
 * another process answers on it.
 */
async function prepareSocketPath(
  path: string,
  gid: number | undefined,
): Promise<void> {
  const dir = path.slice(0, Math.max(1, path.lastIndexOf("/")));
  let made = false;
  try {
    await Deno.stat(dir);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    made = true;
  }
  // Only a directory we made is ours to change; an existing one (say a
  // shared /tmp/x) keeps the modes its owner gave it.
  if (made) {
    if (gid !== undefined) await Deno.chown(dir, null, gid);
    await Deno.chmod(dir, gid === undefined ? 0o700 : 0o770);
  }
  checkSocketDir(dir, await Deno.lstat(dir), gid);
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  if (!info.isSocket) {
    throw new Error(
      `Cannot listen on "${path}": it exists and is not a socket`,
    );
  }
  try {
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
  } catch {
    await Deno.remove(path);
    return;
  }
  throw new Error(
    `Cannot listen on "${path}": another builder is already listening there`,
  );
}

/**
 * Listens on `path` (a file, or `@NAME`), open to `group` (name or gid)
 * when given: modes 0770 and 0660 instead of 0700 and 0600.
 */
export async function listenUnix(
  path: string,
  group: string | undefined,
): Promise<Deno.Listener<Deno.UnixConn, Deno.UnixAddr>> {
  const gid = group === undefined ? undefined : await groupId(group);
  let listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  if (isAbstract(path)) {
    // No file, so no modes: any process in this network namespace may
    // connect.  That is what upstream's builder does.
    if (gid !== undefined) {
      throw new TypeError(
        `Cannot use --socket-group with an abstract socket ("${path}"): it has no file modes`,
      );
    }
    listener = Deno.listen({
      transport: "unix",
      path: unixPath(path),
    });
  } else {
    await prepareSocketPath(path, gid);
    listener = Deno.listen({ transport: "unix", path });
    if (gid !== undefined) await Deno.chown(path, null, gid);
    await Deno.chmod(path, gid === undefined ? 0o600 : 0o660);
  }
  return listener;
}

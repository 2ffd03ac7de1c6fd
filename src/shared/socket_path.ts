/**
 * Unix socket names as users write them: a path, or `@NAME` for a Linux
 * abstract socket (no file; the convention of libwebsockets and upstream
 * Sai's builder).  Deno binds and connects an abstract name when the path
 * starts with a NUL byte, so `@NAME` becomes `"\0NAME"`.
 *
 * @module
 */

/** Longest abstract name: `sun_path` is 108 bytes, one for the NUL. */
const MAX_ABSTRACT_BYTES = 107;

/** Whether `name` is an abstract socket name (`@NAME`). */
export function isAbstract(name: string): boolean {
  return name.startsWith("@");
}

/**
 * The path to give `Deno.listen` / `Deno.connect` for a socket name.
 * Throws `TypeError` for an abstract name off Linux or one too long.
 */
export function unixPath(name: string): string {
  if (!isAbstract(name)) return name;
  if (Deno.build.os !== "linux") {
    throw new TypeError(
      `Cannot use socket "${name}": abstract socket names (@NAME) are Linux only`,
    );
  }
  const rest = name.slice(1);
  if (
    rest === "" || new TextEncoder().encode(rest).length > MAX_ABSTRACT_BYTES
  ) {
    throw new TypeError(
      `Cannot use socket "${name}": an abstract name must be 1 to ${MAX_ABSTRACT_BYTES} bytes after "@"`,
    );
  }
  return `\0${rest}`;
}

/**
 * The message for a program that could not start: Deno's "Address already
 * in use (os error 98)" does not say which address.
 *
 * @module
 */

/** `err`'s message, naming `address` when it is the one already taken. */
export function startErrorMessage(err: unknown, address: string): string {
  if (err instanceof Deno.errors.AddrInUse) {
    return `Cannot listen on "${address}": address already in use`;
  }
  return (err as Error).message;
}

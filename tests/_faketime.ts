/**
 * libfaketime (Debian's `faketime`) for a program under test: its wall
 * clock can be stepped while it runs, its monotonic clock left alone, as an
 * NTP step or an operator's `date -s` would do to a builder.
 *
 * @module
 */

/** Where Debian puts the library (`make test` installs it when missing). */
const LIBRARY = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/** Why the library cannot be used here, or undefined if it can. */
export function faketimeMissing(): string | undefined {
  try {
    Deno.statSync(LIBRARY);
    return undefined;
  } catch {
    return `libfaketime is not installed (${LIBRARY}; apt-get install faketime)`;
  }
}

/** A wall-clock offset that a program started with {@linkcode env} follows. */
export class FakeTime {
  #file: string;

  private constructor(file: string) {
    this.#file = file;
  }

  /** A clock at the real time, until {@linkcode step}. */
  static async create(dir: string): Promise<FakeTime> {
    const clock = new FakeTime(`${dir}/faketime.rc`);
    await clock.set(0);
    return clock;
  }

  /** The environment that puts a program on this clock. */
  get env(): Record<string, string> {
    return {
      LD_PRELOAD: LIBRARY,
      FAKETIME_TIMESTAMP_FILE: this.#file,
      // Read the file at every call, so a step takes effect at once.
      FAKETIME_NO_CACHE: "1",
      FAKETIME_DONT_FAKE_MONOTONIC: "1",
    };
  }

  /** Sets the wall clock `seconds` from the real time (negative: back). */
  async set(seconds: number): Promise<void> {
    const text = `${seconds >= 0 ? "+" : ""}${seconds}\n`;
    const tmp = `${this.#file}.tmp`;
    await Deno.writeTextFile(tmp, text);
    await Deno.rename(tmp, this.#file);
  }
}

/**
 * What the programs say about themselves: `--version`, `--help` (every
 * option with its default, the environment variables, the exit codes: on a
 * builder with only the binaries that is all the documentation there is)
 * and the two lines of a usage error.
 *
 * @module
 */

import config from "../../deno.json" with { type: "json" };

/** This project's version, from deno.json. */
export const VERSION: string = config.version;

/** `sai-server 0.1.0 (deno 2.9.6)`: what `--version` prints. */
export function versionLine(program: string): string {
  return `${program} ${VERSION} (deno ${Deno.version.deno})`;
}

/** One option in `--help`. */
export interface OptionHelp {
  /** As written: `--listen HOST:PORT`, `-d, --debug LEVEL`. */
  flag: string;
  /** What it does, in a few words. */
  text: string;
  /** Its default, when it has one. */
  default?: string;
}

/** The parts of a program's `--help`. */
export interface Help {
  /** The usage lines, without the leading `usage: `. */
  usage: string[];
  /** A paragraph after the usage lines, if any. */
  about?: string;
  options: OptionHelp[];
  environment: [name: string, text: string][];
  exitCodes: [code: string, text: string][];
  /** Where to read more. */
  more?: string;
}

/** Lines a terminal shows whole. */
const WIDTH = 80;

/** Breaks `text` into lines of at most `width` characters, at spaces. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  if (line !== "") lines.push(line);
  return lines;
}

/** Lays `help` out as `--help` prints it, in lines of 80 characters. */
export function formatHelp(help: Help): string {
  const [first, ...rest] = help.usage;
  const lines = [`usage: ${first}`, ...rest.map((u) => `       ${u}`)];
  if (help.about) lines.push("", ...wrap(help.about, WIDTH));
  const column = (rows: [string, string][]) => {
    const width = Math.min(
      30,
      Math.max(...rows.map(([left]) => left.length)) + 2,
    );
    const indent = " ".repeat(2 + width);
    return rows.flatMap(([left, right]) => {
      const text = wrap(right, WIDTH - indent.length);
      const head = left.length + 2 > width
        ? [`  ${left}`, `${indent}${text.shift() ?? ""}`]
        : [`  ${left.padEnd(width)}${text.shift() ?? ""}`];
      return [...head, ...text.map((t) => `${indent}${t}`)];
    });
  };
  lines.push(
    "",
    "Options:",
    ...column(
      help.options.map((o) => [
        o.flag,
        o.default === undefined ? o.text : `${o.text} (default ${o.default})`,
      ]),
    ),
  );
  if (help.environment.length > 0) {
    lines.push("", "Environment:", ...column(help.environment));
  }
  lines.push("", "Exit codes:", ...column(help.exitCodes));
  if (help.more) lines.push("", ...wrap(help.more, WIDTH));
  return lines.join("\n");
}

/** The two lines of a usage error: what is wrong, and where help is. */
export function usageError(program: string, message: string): string {
  return `${program}: ${message}\nTry "${program} --help" for the options.`;
}

/** Whether `--version` is asked for (anywhere before a `--`). */
export function wantsVersion(args: string[]): boolean {
  const end = args.indexOf("--");
  return (end < 0 ? args : args.slice(0, end)).includes("--version");
}

/**
 * Writes a benchmark's figures as a markdown table and a bar chart (SVG)
 * under `bench/results/`, and prints the table.
 *
 * @module
 */

/** One row: a label and its figures, in the columns' order. */
export interface Row {
  label: string;
  values: (number | string)[];
}

/** A benchmark's results. */
export interface Table {
  /** File stem under bench/results/. */
  name: string;
  title: string;
  columns: string[];
  rows: Row[];
  /** Which column the chart plots (default 0). */
  chartColumn?: number;
  /** Notes printed under the table. */
  notes?: string[];
}

const RESULTS = new URL("./results/", import.meta.url);

function fmt(v: number | string): string {
  if (typeof v === "string") return v;
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3);
}

/** The table as markdown. */
export function markdown(t: Table): string {
  const lines = [
    `### ${t.title}`,
    "",
    `| | ${t.columns.join(" | ")} |`,
    `| --- | ${t.columns.map(() => "---:").join(" | ")} |`,
    ...t.rows.map((r) => `| ${r.label} | ${r.values.map(fmt).join(" | ")} |`),
  ];
  if (t.notes?.length) lines.push("", ...t.notes);
  return lines.join("\n") + "\n";
}

function escape(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
}

/** A horizontal bar chart of one column. */
export function svg(t: Table): string {
  const col = t.chartColumn ?? 0;
  const rows = t.rows.filter((r) => typeof r.values[col] === "number");
  const max = Math.max(1e-9, ...rows.map((r) => r.values[col] as number));
  // Room for the longest label at about 7 px a character.
  const left = 20 + 7 * Math.max(10, ...rows.map((r) => r.label.length));
  const w = left + 440, bar = 22, gap = 8, top = 40;
  const h = top + rows.length * (bar + gap) + 10;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${
      escape(`${t.title}: ${t.columns[col]}`)
    }</text>`,
  ];
  rows.forEach((r, i) => {
    const v = r.values[col] as number;
    const y = top + i * (bar + gap);
    const len = Math.max(1, (w - left - 80) * v / max);
    parts.push(
      `<text x="${left - 6}" y="${y + 15}" text-anchor="end">${
        escape(r.label)
      }</text>`,
      `<rect x="${left}" y="${y}" width="${
        len.toFixed(1)
      }" height="${bar}" fill="#4a7ab5"/>`,
      `<text x="${(left + len + 4).toFixed(1)}" y="${y + 15}">${fmt(v)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

/** Prints the table and writes `NAME.md` and `NAME.svg`. */
export async function publish(t: Table): Promise<void> {
  await Deno.mkdir(RESULTS, { recursive: true });
  const md = markdown(t);
  await Deno.writeTextFile(new URL(`${t.name}.md`, RESULTS), md);
  await Deno.writeTextFile(new URL(`${t.name}.svg`, RESULTS), svg(t));
  await Deno.stdout.write(new TextEncoder().encode(md + "\n"));
}

/** The p-th percentile (0–1) of sorted numbers. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1);
  return sorted[Math.max(0, i)]!;
}

/**
 * What a refusal for an unknown resource says about the known ones: the
 * names nearest to the one asked for (a misspelling), then the rest, at
 * most {@linkcode MAX_NAMES_LISTED} of them, so that a server with
 * thousands of resources still sends a short message.
 *
 * @module
 */

/** The most names a refusal lists. */
export const MAX_NAMES_LISTED = 8;

/** Edit distances above this are not "near". */
const NEAR = 2;

/**
 * Lists `known` for a refusal of `asked`: `known: "a", "b"`, nearest
 * first, at most {@linkcode MAX_NAMES_LISTED}, then how many more there
 * are; `no resources are configured` when there are none.  Linear in the
 * number of names: each is compared only up to a distance of 2.
 */
export function knownNames(asked: string, known: Iterable<string>): string {
  const near: [number, string][] = [];
  const others: string[] = [];
  let count = 0;
  const wanted = asked.toLowerCase();
  for (const name of known) {
    count++;
    const d = distanceWithin(wanted, name.toLowerCase(), NEAR);
    if (d <= NEAR) near.push([d, name]);
    else if (others.length < MAX_NAMES_LISTED) others.push(name);
  }
  if (count === 0) return "no resources are configured";
  // Stable: equally near names keep the configured order.
  near.sort((a, b) => a[0] - b[0]);
  const listed = [...near.map(([, name]) => name), ...others].slice(
    0,
    MAX_NAMES_LISTED,
  );
  const more = count - listed.length;
  return `known: ${listed.map((n) => `"${n}"`).join(", ")}${
    more > 0 ? ` and ${more} more` : ""
  }`;
}

/**
 * The Levenshtein distance of `a` and `b` if it is at most `max`, else
 * `max + 1`: only a band of width 2 × max + 1 is computed.
 */
export function distanceWithin(a: string, b: string, max: number): number {
  const far = max + 1;
  if (Math.abs(a.length - b.length) > max) return far;
  if (scratch[0].length <= b.length) {
    scratch = [
      new Int32Array(b.length * 2 + 2),
      new Int32Array(b.length * 2 + 2),
    ];
  }
  let [prev, row] = scratch;
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    const from = Math.max(1, i - max);
    const to = Math.min(b.length, i + max);
    row[0] = i;
    // Only the band is computed; what lies outside it reads as "far".
    if (from > 1) row[from - 1] = far;
    let best = i;
    for (let j = from; j <= to; j++) {
      const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1;
      const up = j <= i - 1 + max ? prev[j]! : far;
      row[j] = Math.min(prev[j - 1]! + cost, up + 1, row[j - 1]! + 1);
      if (row[j]! < best) best = row[j]!;
    }
    if (best > max) return far;
    [prev, row] = [row, prev];
  }
  return Math.min(prev[b.length]!, far);
}

/** Two rows of the distance table, reused (this module is synchronous). */
let scratch: [Int32Array, Int32Array] = [
  new Int32Array(130),
  new Int32Array(130),
];

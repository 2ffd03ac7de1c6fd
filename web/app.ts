/// <reference lib="dom" />
/**
 * The status page: renders `/api/status` snapshots pushed over Server-Sent
 * Events (`/api/events`), ticks the durations locally between pushes, and
 * reconnects by itself when the server goes away.
 *
 * Bundled by `scripts/build_web.ts` into `src/server/_web_asset.ts`.
 *
 * @module
 */

import {
  formatDuration as duration,
  formatStart,
} from "../src/shared/format.ts";
import type {
  StatusDocument,
  StatusResource,
} from "../src/server/status_document.ts";

let doc: StatusDocument | undefined;
/** Server clock minus ours, from the last snapshot. */
let skew = 0;

function $(id: string): HTMLElement {
  return document.getElementById(id)!;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

function table(
  head: [string, boolean][],
  rows: { cookie: string; cells: [string, string][] }[],
): HTMLElement {
  const thead = el(
    "thead",
    {},
    el(
      "tr",
      {},
      ...head.map(([t, num]) => el("th", num ? { class: "num" } : {}, t)),
    ),
  );
  const tbody = el(
    "tbody",
    {},
    ...rows.map((r) =>
      el(
        "tr",
        { "data-cookie": r.cookie },
        ...r.cells.map(([cls, text]) =>
          el("td", cls ? { class: cls } : {}, text)
        ),
      )
    ),
  );
  return el("div", { class: "scroll" }, el("table", {}, thead, tbody));
}

/** Where the budget comes from: the config, or the admin API (which wins). */
function budgetSource(r: StatusResource): HTMLElement {
  const admin = r.budgetSource === "admin";
  const config = r.configBudget === null
    ? "not in the config"
    : `config: ${r.configBudget}`;
  return el(
    "p",
    { class: "source", "data-source": r.budgetSource },
    admin
      ? `Budget ${r.budget} set through the admin API (${config})`
      : `Budget ${r.budget} from the config`,
  );
}

function resourceCard(r: StatusResource, now: number): HTMLElement {
  const pct = r.budget > 0
    ? Math.min(100, (r.allocated / r.budget) * 100)
    : (r.allocated > 0 ? 100 : 0);
  const over = r.allocated > r.budget;
  const bar = el(
    "div",
    {
      class: "bar",
      role: "meter",
      "aria-valuemin": "0",
      "aria-valuemax": String(r.budget),
      "aria-valuenow": String(r.allocated),
      "aria-label": `${r.name}: ${r.allocated} of ${r.budget} allocated`,
      "data-allocated": String(r.allocated),
      "data-budget": String(r.budget),
      "data-over": String(over),
    },
    el("div", { class: "fill", style: `width: ${pct.toFixed(1)}%` }),
  );
  const queued = el(
    "span",
    { class: "queued", "data-queued": String(r.queuedAmount) },
    r.queuedRequests > 0
      ? `+${r.queuedAmount} queued (${r.queuedRequests})`
      : "no queue",
  );
  const card = el(
    "section",
    { class: "resource", "data-resource": r.name },
    el(
      "div",
      { class: "title" },
      el("h2", {}, r.name),
      el(
        "span",
        { class: "numbers" },
        `${r.allocated} / ${r.budget} allocated` +
          (over ? " (draining)" : "") + ` · peak ${r.peak}`,
      ),
    ),
    el("div", { class: "meter" }, bar, queued),
    budgetSource(r),
  );
  card.append(el("h3", {}, `Leases (${r.leases.length})`));
  card.append(
    r.leases.length === 0 ? el("p", { class: "empty" }, "No leases") : table(
      [
        ["Builder", false],
        ["Cookie", false],
        ["Amount", true],
        [
          "Held for",
          true,
        ],
        ["Expires in", true],
        ["For process", false],
      ],
      r.leases.map((l) => ({
        cookie: l.cookie,
        cells: [
          ["", l.builder || l.owner],
          ["cookie", l.cookie],
          ["num", String(l.amount)],
          ["num", duration(now - l.grantedAt)],
          ["num", duration(l.expires - now)],
          ["", l.process ? `${l.process.name} [${l.process.pid}]` : "–"],
        ],
      })),
    ),
  );
  card.append(el("h3", {}, `Queue (${r.queue.length})`));
  card.append(
    r.queue.length === 0
      ? el("p", { class: "empty" }, "Nobody waiting")
      : table(
        [["#", true], ["Builder", false], ["Cookie", false], ["Amount", true], [
          "Waiting for",
          true,
        ], ["Estimated start", true]],
        r.queue.map((q) => ({
          cookie: q.cookie,
          cells: [
            ["num", String(q.position)],
            ["", q.builder || q.owner],
            ["cookie", q.cookie],
            ["num", String(q.amount)],
            ["num", duration(now - q.enqueuedAt)],
            ["num", formatStart(q.estimatedStart, now)],
          ],
        })),
      ),
  );
  return card;
}

function render(): void {
  if (!doc) return;
  const now = Date.now() + skew;
  $("resources").replaceChildren(
    ...doc.resources.map((r) => resourceCard(r, now)),
  );
  const s = doc.stats;
  const refused = Object.values(s.refusals).reduce((a, b) => a + (b ?? 0), 0);
  const names = doc.builders.map((b) => b.name || b.id).join(", ");
  $("footer").textContent = `${doc.builders.length} builder(s)${
    names ? `: ${names}` : ""
  } · ${s.grants} granted · ${refused} refused · ${s.expiries} expired · ${s.releases} released · policy ${doc.policy}`;
}

function setConn(state: "connecting" | "live" | "down", text: string): void {
  const c = $("conn");
  c.dataset.state = state;
  c.textContent = text;
}

let retryMs = 500;

function connect(): void {
  const es = new EventSource("/api/events");
  es.addEventListener("open", () => {
    retryMs = 500;
    setConn("live", "live");
  });
  es.addEventListener("status", (ev) => {
    doc = JSON.parse((ev as MessageEvent<string>).data) as StatusDocument;
    skew = doc.time - Date.now();
    setConn("live", "live");
    render();
  });
  es.addEventListener("error", () => {
    setConn("down", "reconnecting…");
    // The browser retries by itself unless the stream was refused outright
    // (say a proxy's error page while the server restarts): then we do.
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 5000);
    }
  });
}

if (typeof document !== "undefined") {
  connect();
  // Durations move with the clock between pushes; nothing is fetched.
  setInterval(render, 1000);
}

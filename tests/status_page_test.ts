/**
 * The status page in a real headless Chromium against a live server and
 * builder: the lease shows up, then goes away, without a reload.
 */

import assert from "node:assert/strict";
import puppeteer from "puppeteer-core";
import { BuilderProc, runClient, ServerProc, waitFor } from "./_harness.ts";

const CHROMIUM = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";

/** Fails the test, not skips it: CI must have a browser (.ci/run). */
async function requireChromium(): Promise<void> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(
      `Cannot run the status page test: no Chromium at ${CHROMIUM}; install it with "apt-get install -y chromium" (.ci/run does) or set CHROMIUM`,
    );
  }
}

async function launch(userDataDir: string) {
  return await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
    ],
  });
}

Deno.test("status page shows a held lease live and updates when it is released", async () => {
  await requireChromium();
  const tmp = await Deno.makeTempDir({ prefix: "sai-page-test-" });
  await using server = await ServerProc.start([
    "--resources",
    "warmcat_conns=4",
  ]);
  await using builder = await BuilderProc.start(server, { name: "page-b" });
  const env = { SAI_BUILDER_RESOURCE_PROXY: builder.socket };
  const browser = await launch(`${tmp}/profile`);
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(String(err)));
    // Anything but our own listener would be an external fetch.
    const foreign: string[] = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(`http://127.0.0.1:${server.port}/`)) {
        foreign.push(r.url());
      }
    });
    await page.setViewport({ width: 1100, height: 700 });
    const res = await page.goto(`http://127.0.0.1:${server.port}/`);
    assert.match(
      res?.headers()["content-security-policy"] ?? "",
      /default-src 'none'/,
    );
    await page.waitForSelector('[data-resource="warmcat_conns"]');
    await page.waitForSelector('.conn[data-state="live"]');
    let navigations = 0;
    page.on("framenavigated", () => navigations++);

    const got = await runClient(
      ["warmcat_conns", "3", "60", "page-cookie"],
      env,
    );
    assert.equal(got.code, 0, got.stderr);

    // The push arrives without a reload: the bar and the lease row.
    const bar = '[data-resource="warmcat_conns"] .bar';
    await page.waitForSelector(`${bar}[data-allocated="3"]`, {
      timeout: 10_000,
    });
    const row = await page.$eval(
      '[data-resource="warmcat_conns"] tr[data-cookie="page-cookie"]',
      (tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent),
    );
    assert.equal(row[0], "page-b");
    assert.equal(row[1], "page-cookie");
    assert.equal(row[2], "3");
    assert.match(row[4] ?? "", /^(59|60) s$|^1 min 0 s$/);
    // Held for the process that ran sai-resource: this test.
    assert.equal(row[5], `deno [${Deno.pid}]`);
    const width = await page.$eval(
      `${bar} .fill`,
      (el) => el.getAttribute("style"),
    );
    assert.equal(width, "width: 75.0%");
    const title = await page.$eval(
      '[data-resource="warmcat_conns"] .numbers',
      (el) => el.textContent,
    );
    assert.match(title ?? "", /^3 \/ 4 allocated/);
    // A request that must wait shows in the queue table.
    const queued = runClient(
      ["warmcat_conns", "2", "60", "queued-cookie", "--wait", "30", "--quiet"],
      env,
    );
    await page.waitForSelector(
      '[data-resource="warmcat_conns"] tr[data-cookie="queued-cookie"]',
      { timeout: 10_000 },
    );
    const qrow = await page.$eval(
      'tr[data-cookie="queued-cookie"]',
      (tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent),
    );
    assert.deepEqual(qrow.slice(0, 4), ["1", "page-b", "queued-cookie", "2"]);
    assert.match(qrow[5] ?? "", /^in (59|60) s$|^in 1 min 0 s$/);
    assert.equal(
      await page.$eval(
        '[data-resource="warmcat_conns"] .queued',
        (el) => el.getAttribute("data-queued"),
      ),
      "2",
    );
    await page.screenshot({ path: `${tmp}/status_page.png`, fullPage: true });
    // A phone-sized view for the record too.
    await page.setViewport({ width: 390, height: 800 });
    await page.screenshot({
      path: `${tmp}/status_page_phone.png`,
      fullPage: true,
    });

    const rel = await runClient(["--release", "page-cookie"], env);
    assert.equal(rel.code, 0, rel.stderr);
    // The queued request is granted: 2 of 4, and the old row is gone.
    assert.equal((await queued).code, 0);
    await page.waitForSelector(`${bar}[data-allocated="2"]`, {
      timeout: 10_000,
    });
    assert.equal(
      await page.$('tr[data-cookie="page-cookie"]'),
      null,
      "the released lease's row must go",
    );
    const rel2 = await runClient(["--release", "queued-cookie"], env);
    assert.equal(rel2.code, 0, rel2.stderr);
    await page.waitForSelector(`${bar}[data-allocated="0"]`, {
      timeout: 10_000,
    });
    assert.equal(await page.$("tr[data-cookie]"), null, "no rows left");
    assert.equal(navigations, 0, "the page must update without a reload");
    assert.deepEqual(errors, []);
    assert.deepEqual(foreign, []);
    // deno-lint-ignore no-console -- where to look at the page
    console.error(`status page screenshots: ${tmp}/status_page*.png`);
  } finally {
    await browser.close();
    // Keep the screenshots (see README); only the browser profile goes.
    await Deno.remove(`${tmp}/profile`, { recursive: true }).catch(() => {});
  }
  await waitFor(
    "the server to see the release",
    async () => (await server.resource("warmcat_conns")).allocated === 0,
  );
});

Deno.test("status page reconnects by itself after the server restarts", async () => {
  await requireChromium();
  const tmp = await Deno.makeTempDir({ prefix: "sai-page-test-" });
  let server = await ServerProc.start(["--resources", "r=3"]);
  const port = server.port;
  const browser = await launch(`${tmp}/profile`);
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.waitForSelector('[data-resource="r"] .bar[data-budget="3"]');
    let navigations = 0;
    page.on("framenavigated", () => navigations++);
    await server.stop();
    await page.waitForSelector('.conn[data-state="down"]', { timeout: 10_000 });
    server = await ServerProc.start([
      "--listen",
      `127.0.0.1:${port}`,
      "--resources",
      "r=7",
    ]);
    await page.waitForSelector('[data-resource="r"] .bar[data-budget="7"]', {
      timeout: 15_000,
    });
    await page.waitForSelector('.conn[data-state="live"]');
    assert.equal(navigations, 0, "reconnected without a reload");
  } finally {
    await browser.close();
    await server.stop();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
});

Deno.test("status page shows where each budget comes from, and follows an admin change live", async () => {
  await requireChromium();
  const tmp = await Deno.makeTempDir({ prefix: "sai-page-test-" });
  const token = "page-admin-token-21";
  await using server = await ServerProc.start([
    "--resources",
    "r=3",
    "--admin-token",
    token,
  ]);
  const browser = await launch(`${tmp}/profile`);
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.port}/`);
    const source = '[data-resource="r"] .source';
    await page.waitForSelector(`${source}[data-source="config"]`);
    assert.equal(
      await page.$eval(source, (el) => el.textContent),
      "Budget 3 from the config",
    );
    const res = await fetch(`http://127.0.0.1:${server.port}/api/resources/r`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: '{"budget":6}',
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
    await page.waitForSelector(`${source}[data-source="admin"]`, {
      timeout: 10_000,
    });
    assert.equal(
      await page.$eval(source, (el) => el.textContent),
      "Budget 6 set through the admin API (config: 3)",
    );
  } finally {
    await browser.close();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
});

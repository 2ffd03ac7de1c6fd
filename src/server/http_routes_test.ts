import assert from "node:assert/strict";
import { HttpRoutes } from "./http_routes.ts";
import { Logger } from "../shared/log.ts";
import { type StatusDocument, zeroStats } from "./status_document.ts";
import type { AdminTarget } from "./admin.ts";

function routes(
  status: () => StatusDocument,
  maxStreams?: number,
): HttpRoutes {
  return new HttpRoutes({
    ...(maxStreams !== undefined && { maxStreams }),
    status,
    metrics: () => "",
    admin: {} as AdminTarget,
    adminToken: undefined,
    logger: new Logger("error"),
    pushIntervalMs: 0,
  });
}

function doc(time: number): StatusDocument {
  return {
    version: 1,
    time,
    reclaimUntil: null,
    policy: "fifo",
    builders: [],
    resources: [],
    stats: zeroStats(),
  };
}

Deno.test("HttpRoutes event stream: a reader that does not read holds a bounded backlog and then gets the latest snapshot", async () => {
  let n = 0;
  const r = routes(() => doc(n));
  const res = await r.handle(
    new Request("http://x/api/events"),
    "127.0.0.1:1",
  );
  const reader = res.body!.getReader();
  try {
    // 500 changes while nobody reads.
    for (n = 1; n <= 500; n++) {
      r.changed();
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    n = 500;
    const frames: number[] = [];
    const decoder = new TextDecoder();
    let text = "";
    while (!frames.includes(500)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value);
      for (const m of text.matchAll(/"time":(\d+)/g)) frames.push(Number(m[1]));
      text = text.slice(text.lastIndexOf("\n\n") + 2);
    }
    assert.ok(
      frames.length <= 4,
      `a bounded backlog, not every change: got ${frames.length} frames`,
    );
    assert.equal(frames.at(-1), 500, "the latest snapshot comes last");
  } finally {
    await reader.cancel();
    r.close();
  }
});

Deno.test("HttpRoutes event streams: past maxStreams a 503 with Retry-After, and a place is given back when a reader leaves", async () => {
  const r = routes(() => doc(1), 2);
  const open = () =>
    r.handle(new Request("http://x/api/events"), "127.0.0.1:1");
  const first = await open();
  const second = await open();
  try {
    assert.equal(first.status, 200);
    assert.equal(second.status, 200);
    const third = await open();
    assert.equal(third.status, 503);
    assert.equal(third.headers.get("retry-after"), "1");
    assert.match((await third.json()).error, /Too many event streams \(2\)/);
    await first.body!.cancel();
    const again = await open();
    assert.equal(again.status, 200);
    await again.body!.cancel();
  } finally {
    await second.body!.cancel();
    r.close();
  }
});

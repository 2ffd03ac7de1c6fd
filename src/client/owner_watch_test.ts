import assert from "node:assert/strict";
import {
  chooseOwner,
  ctestAncestor,
  ownerAlive,
  ownerFor,
  parseProcStat,
  readProcStat,
  watchOwner,
} from "./owner_watch.ts";

/** A stat line as Linux writes it, with the fields we read set. */
function statLine(
  pid: number,
  name: string,
  ppid: number,
  start: number,
  state = "S",
): string {
  const after = [
    state,
    ppid,
    ppid,
    0,
    0,
    -1,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    20,
    0,
    1,
    0,
    start,
    1000,
    10,
  ];
  return `${pid} (${name}) ${after.join(" ")}\n`;
}

/** A fake /proc with the given processes. */
async function fakeProc(
  procs: [
    pid: number,
    name: string,
    ppid: number,
    start: number,
    state?: string,
  ][],
): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "sai-proc-" });
  for (const [pid, name, ppid, start, state] of procs) {
    await Deno.mkdir(`${root}/${pid}`);
    await Deno.writeTextFile(
      `${root}/${pid}/stat`,
      statLine(pid, name, ppid, start, state),
    );
  }
  return root;
}

Deno.test("parseProcStat() reads fields after the last parenthesis of the name", () => {
  assert.deepEqual(parseProcStat(statLine(42, "a) (b c)", 7, 9001, "Z")), {
    pid: 42,
    name: "a) (b c)",
    state: "Z",
    ppid: 7,
    start: 9001,
  });
  assert.throws(() => parseProcStat("42 nonsense"), SyntaxError);
});

Deno.test("readProcStat() reads this process and nothing for a PID that cannot be seen", () => {
  const self = readProcStat(Deno.pid);
  assert.equal(self?.pid, Deno.pid);
  assert.equal(self?.ppid, Deno.ppid);
  assert.equal(readProcStat(0), undefined);
  assert.equal(readProcStat(2 ** 31 - 1), undefined);
});

Deno.test("chooseOwner() picks the nearest ctest ancestor, else the parent", async () => {
  const root = await fakeProc([
    [10, "bash", 1, 100],
    [20, "ctest", 10, 200],
    [30, "sh", 20, 300],
    [40, "make", 10, 400],
  ]);
  try {
    assert.deepEqual(chooseOwner({ parent: 30, procRoot: root }), {
      kind: "watch",
      owner: { pid: 20, name: "ctest", start: 200 },
      how: "ctest",
    });
    assert.deepEqual(chooseOwner({ parent: 40, procRoot: root }), {
      kind: "watch",
      owner: { pid: 40, name: "make", start: 400 },
      how: "parent",
    });
    assert.deepEqual(
      chooseOwner({ parent: 30, ownerPid: 10, procRoot: root }),
      {
        kind: "watch",
        owner: { pid: 10, name: "bash", start: 100 },
        how: "given",
      },
    );
    assert.deepEqual(chooseOwner({ parent: 30, noOwner: true }), {
      kind: "none",
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("ctestAncestor() finds the nearest ctest up the tree, and nothing without one", async () => {
  const root = await fakeProc([
    [10, "ctest", 1, 100],
    [20, "ctest", 10, 200],
    [30, "sh", 20, 300],
    [40, "bash", 1, 400],
  ]);
  try {
    assert.deepEqual(ctestAncestor(30, { procRoot: root }), {
      pid: 20,
      name: "ctest",
      start: 200,
    });
    // Re-parented to init once the starting shell is gone: no way up.
    assert.equal(ctestAncestor(1, { procRoot: root }), undefined);
    assert.equal(ctestAncestor(40, { procRoot: root }), undefined);
    assert.equal(ctestAncestor(99, { procRoot: root }), undefined);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("chooseOwner() says why when it cannot see the process", async () => {
  const root = await fakeProc([[10, "bash", 1, 100]]);
  try {
    const ns = chooseOwner({ parent: 0, procRoot: root });
    assert.equal(ns.kind, "none");
    assert.match(ns.kind === "none" ? ns.reason! : "", /another PID namespace/);
    const given = chooseOwner({ parent: 10, ownerPid: 99, procRoot: root });
    assert.equal(given.kind, "none");
    assert.match(
      given.kind === "none" ? given.reason! : "",
      /cannot see process 99 \(--owner-pid\)/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("ownerAlive() is false for a reused PID or a zombie", async () => {
  const root = await fakeProc([[10, "ctest", 1, 100], [
    11,
    "ctest",
    1,
    5,
    "Z",
  ]]);
  try {
    assert.equal(
      ownerAlive({ pid: 10, name: "ctest", start: 100 }, { procRoot: root }),
      true,
    );
    // Same PID, another process: it started at another time.
    assert.equal(
      ownerAlive({ pid: 10, name: "ctest", start: 99 }, { procRoot: root }),
      false,
    );
    assert.equal(
      ownerAlive({ pid: 11, name: "ctest", start: 5 }, { procRoot: root }),
      false,
    );
    assert.equal(
      ownerAlive({ pid: 12, name: "ctest", start: 5 }, { procRoot: root }),
      false,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("watchOwner() calls back once when a real process exits, not before", async () => {
  const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
  const stat = readProcStat(child.pid)!;
  const owner = { pid: stat.pid, name: stat.name, start: stat.start };
  let calls = 0;
  const gone = Promise.withResolvers<void>();
  const stop = watchOwner(owner, () => {
    calls++;
    gone.resolve();
  }, { intervalMs: 20 });
  try {
    assert.equal(ownerAlive(owner), true);
    assert.equal(calls, 0);
    child.kill("SIGKILL");
    await child.status;
    await gone.promise;
    assert.equal(calls, 1);
  } finally {
    stop();
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }
});

Deno.test("ownerFor() names the process, and keeps the start the parent saw", async () => {
  const root = await fakeProc([[10, "ct\test", 1, 100]]);
  try {
    assert.deepEqual(ownerFor(10, undefined, { procRoot: root }), {
      pid: 10,
      name: "ct?est",
      start: 100,
    });
    // A PID reused since the parent looked: gone at the first look.
    const reused = ownerFor(10, 99, { procRoot: root });
    assert.equal(ownerAlive(reused, { procRoot: root }), false);
    assert.deepEqual(ownerFor(11, 5, { procRoot: root }), {
      pid: 11,
      name: "?",
      start: 5,
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

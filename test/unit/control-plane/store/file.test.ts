import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { mkdtemp, open, readFile, realpath, rm, stat, symlink, truncate, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";

import {
  FileStore,
  StoreClosedError,
  StoreCorruptError,
  StoreLockedError,
  type FileStoreOptions,
} from "../../../../control-plane/src/store/file.js";
import { StoreConflictError, type CommitEvent, type Mutation, type StoreState } from "../../../../control-plane/src/store/store.js";
import { workloadMutations, workloadState } from "../../../support/store-workload.mjs";

const root = fileURLToPath(new URL("../../../../", import.meta.url));
const writerScript = path.join(root, "test/support/store-writer.mjs");

const put = (kind: Mutation["kind"], id: string, data: string): Mutation => ({ op: "put", kind, id, data });
const del = (kind: Mutation["kind"], id: string): Mutation => ({ op: "delete", kind, id });

/** A state as plain data, for toEqual. */
function plain(state: StoreState): Record<string, { revision: bigint; data: string }> {
  return Object.fromEntries([...state.resources].map(([key, r]) => [key, { revision: r.revision, data: r.data }]));
}

const dirs: string[] = [];
const stores: FileStore[] = [];
const children: ChildProcess[] = [];

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "filestore-"));
  dirs.push(dir);
  return dir;
}

/** Opens a store that the test's teardown closes if the test does not. */
async function openStore(dir: string, opts?: FileStoreOptions): Promise<FileStore> {
  const store = await FileStore.open(dir, opts);
  stores.push(store);
  return store;
}

afterEach(async () => {
  vi.restoreAllMocks();
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, "SIGKILL");
      await new Promise((resolve) => child.once("exit", resolve));
    }
  }
  await Promise.all(stores.splice(0).map((s) => s.close().catch(() => undefined)));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** Commits the next `count` workload versions; returns the last version. */
async function commitWorkload(store: FileStore, count: number): Promise<bigint> {
  let { version } = await store.load();
  for (let i = 0; i < count; i++) version = await store.commit(version, workloadMutations(version + 1n));
  return version;
}

describe("FileStore basics", () => {
  it("round-trips puts and deletes through a reopen", async () => {
    const dir = path.join(await tempDir(), "nested", "data");
    const store = await openStore(dir);
    expect((statSync(dir).mode & 0o777).toString(8)).toBe("700");
    expect(await store.load()).toEqual({ version: 0n, resources: new Map() });

    expect(await store.commit(0n, [put("rule", "a", "A1"), put("upstream", "u", "U1"), put("tenant", "t", "T1")])).toBe(1n);
    expect(await store.commit(1n, [put("rule", "a", "A2"), del("upstream", "u"), del("rollout", "missing")])).toBe(2n);
    const before = plain(await store.load());
    expect(before).toEqual({
      "rule/a": { revision: 2n, data: "A2" },
      "tenant/t": { revision: 1n, data: "T1" },
    });
    await store.close();

    const reopened = await openStore(dir);
    const after = await reopened.load();
    expect(after.version).toBe(2n);
    expect(plain(after)).toEqual(before);
  });

  it("keeps a loaded state unchanged by later commits", async () => {
    const store = await openStore(await tempDir());
    await store.commit(0n, [put("rule", "a", "A1")]);
    const first = await store.load();
    await store.commit(1n, [del("rule", "a")]);
    expect(first.version).toBe(1n);
    expect(first.resources.get("rule/a")?.data).toBe("A1");
  });

  it("commits a delete of a missing resource as a no-op that still takes a version", async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    const events: CommitEvent[] = [];
    store.subscribe((e) => events.push(e));
    expect(await store.commit(0n, [del("rule", "nope")])).toBe(1n);
    expect(events.map((e) => e.version)).toEqual([1n]);
    await store.close();
    const reopened = await openStore(dir);
    expect(await reopened.load()).toEqual({ version: 1n, resources: new Map() });
  });

  it("rejects a stale expected version with StoreConflictError and writes nothing", async () => {
    const dir = await tempDir();
    const journal = path.join(dir, "journal.log");
    const store = await openStore(dir);
    await store.commit(0n, [put("rule", "a", "A1")]);
    const events: CommitEvent[] = [];
    store.subscribe((e) => events.push(e));
    const sizeBefore = (await stat(journal)).size;

    const error = await store.commit(0n, [put("rule", "a", "lost")]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreConflictError);
    expect(error).toMatchObject({ expectedVersion: 0n, actualVersion: 1n });
    expect((await stat(journal)).size).toBe(sizeBefore);
    expect(events).toEqual([]);
    expect(plain(await store.load())).toEqual({ "rule/a": { revision: 1n, data: "A1" } });

    // Two writers racing from the same version: exactly one wins.
    const results = await Promise.allSettled([store.commit(1n, [put("rule", "b", "x")]), store.commit(1n, [put("rule", "c", "y")])]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected"]);
    await store.close();
    const reopened = await openStore(dir);
    expect([...(await reopened.load()).resources.keys()].sort()).toEqual(["rule/a", "rule/b"]);
  });

  it("rejects malformed mutations at the edge, naming the field", async () => {
    const store = await openStore(await tempDir());
    await expect(store.commit(0n, [{ op: "put", kind: "nope", id: "a", data: "" } as unknown as Mutation])).rejects.toThrow(
      /mutations\[0\]\.kind/,
    );
    await expect(store.commit(0n, [{ op: "put", kind: "rule", id: "a" } as unknown as Mutation])).rejects.toThrow(/mutations\[0\]\.data/);
    await expect(store.commit(0 as unknown as bigint, [])).rejects.toThrow(/expectedVersion/);
    expect((await store.load()).version).toBe(0n);
  });

  it("delivers events in version order, after the record is in the journal", async () => {
    const dir = await tempDir();
    const journal = path.join(dir, "journal.log");
    const warnings: Error[] = [];
    const store = await openStore(dir, { onWarning: (w) => warnings.push(w) });
    const seen: bigint[] = [];
    const onDisk: boolean[] = [];
    store.subscribe((e) => {
      seen.push(e.version);
      onDisk.push(readFileSync(journal).includes(`"v":"${e.version}"`));
    });
    const unsubscribeThrower = store.subscribe(() => {
      throw new Error("subscriber bug");
    });
    const late: bigint[] = [];
    let unsubscribeLate = (): void => undefined;

    const commits = Array.from({ length: 20 }, (_, i) => {
      if (i === 10) unsubscribeLate = store.subscribe((e) => late.push(e.version));
      return store.commit(BigInt(i), [put("rule", `r${i}`, String(i))]);
    });
    expect(await Promise.all(commits)).toEqual(Array.from({ length: 20 }, (_, i) => BigInt(i + 1)));
    expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => BigInt(i + 1)));
    expect(onDisk.every(Boolean)).toBe(true);
    // Subscribed while the commits were queued but before any ran: it sees all of them.
    expect(late).toEqual(Array.from({ length: 20 }, (_, i) => BigInt(i + 1)));
    expect(warnings).toHaveLength(20);
    expect(warnings[0]?.message).toMatch(/subscriber threw on version 1/);

    unsubscribeLate();
    unsubscribeThrower();
    await store.commit(20n, [del("rule", "r0")]);
    expect(late).toHaveLength(20);
    expect(seen.at(-1)).toBe(21n);
  });

  it("lets close() settle pending commits, then rejects every later call", async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    const pending = [store.commit(0n, [put("rule", "a", "1")]), store.commit(1n, [put("rule", "b", "2")])];
    const closed = store.close();
    expect(store.close()).toBe(closed);
    await closed;
    expect(await Promise.all(pending)).toEqual([1n, 2n]);
    expect(existsSync(path.join(dir, "LOCK"))).toBe(false);

    await expect(store.commit(2n, [])).rejects.toBeInstanceOf(StoreClosedError);
    const real = await realpath(dir);
    await expect(store.load()).rejects.toThrow(`file store ${real} is closed`);
    await expect(store.compact()).rejects.toBeInstanceOf(StoreClosedError);
    expect(() => store.subscribe(() => undefined)).toThrow(StoreClosedError);

    const reopened = await openStore(dir);
    expect((await reopened.load()).version).toBe(2n);
  });
});

describe("FileStore compaction", () => {
  it("preserves every resource and keeps versions growing across compactions and reopens", async () => {
    const dir = await tempDir();
    const journal = path.join(dir, "journal.log");
    let store = await openStore(dir, { compactAfterRecords: 7 });
    let version = await commitWorkload(store, 50);
    expect(version).toBe(50n);
    expect(existsSync(path.join(dir, "checkpoint.dat"))).toBe(true);
    // 50 = 7 × 7 + 1: the last compaction left one record.
    expect(readFileSync(journal).toString("latin1").split("GWJ1").length - 1).toBe(1);
    expect(plain(await store.load())).toEqual(Object.fromEntries(workloadState(50n)));
    await store.close();

    store = await openStore(dir, { compactAfterBytes: 2048 });
    expect((await store.load()).version).toBe(50n);
    version = await commitWorkload(store, 30);
    expect(version).toBe(80n);
    await store.compact();
    expect((await stat(journal)).size).toBe(0);
    await store.close();

    store = await openStore(dir);
    const state = await store.load();
    expect(state.version).toBe(80n);
    expect(plain(state)).toEqual(Object.fromEntries(workloadState(80n)));
    expect(await store.commit(80n, workloadMutations(81n))).toBe(81n);
  });

  it("recovers a compaction that died between the checkpoint rename and emptying the journal", async () => {
    const dir = await tempDir();
    const journal = path.join(dir, "journal.log");
    let store = await openStore(dir);
    await commitWorkload(store, 10);
    const journalBefore = await readFile(journal);
    await store.compact();
    await store.close();
    await writeFile(journal, journalBefore);
    // Also a temp checkpoint from a compaction that died before its rename.
    await writeFile(path.join(dir, "checkpoint.dat.tmp"), "half a checkpoint");

    store = await openStore(dir);
    expect(plain(await store.load())).toEqual(Object.fromEntries(workloadState(10n)));
    expect((await stat(journal)).size).toBe(0);
    expect(existsSync(path.join(dir, "checkpoint.dat.tmp"))).toBe(false);
    await commitWorkload(store, 2);
    await store.close();

    store = await openStore(dir);
    expect(plain(await store.load())).toEqual(Object.fromEntries(workloadState(12n)));
  });

  it("refuses a damaged checkpoint, naming the file", async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    await commitWorkload(store, 5);
    await store.compact();
    await store.close();
    const checkpoint = path.join(dir, "checkpoint.dat");
    const bytes = await readFile(checkpoint);
    bytes[bytes.length - 3] ^= 0x01;
    await writeFile(checkpoint, bytes);

    const error = await FileStore.open(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreCorruptError);
    expect(error).toMatchObject({ offset: 0, reason: "checksum mismatch" });
    expect((error as Error).message).toContain(path.join(await realpath(dir), "checkpoint.dat"));
  });
});

describe("FileStore recovery", () => {
  /** Three commits; returns the journal offsets where records 1, 2, 3 start and where the journal ends. */
  async function threeCommits(dir: string): Promise<number[]> {
    const store = await openStore(dir);
    const offsets = [0];
    for (let v = 1n; v <= 3n; v++) {
      await store.commit(v - 1n, workloadMutations(v));
      offsets.push((await stat(path.join(dir, "journal.log"))).size);
    }
    await store.close();
    return offsets;
  }

  const tornTails: { name: string; damage: (journal: string, offsets: number[]) => Promise<void>; survivors: bigint }[] = [
    { name: "the last record cut mid-payload", damage: (j, o) => truncate(j, o[3]! - 7), survivors: 2n },
    { name: "the last record cut inside its header", damage: (j, o) => truncate(j, o[2]! + 5), survivors: 2n },
    {
      name: "the last record's checksum broken",
      damage: async (j, o) => {
        const bytes = await readFile(j);
        bytes[o[2]! + 20] ^= 0xff;
        await writeFile(j, bytes);
      },
      survivors: 2n,
    },
    {
      name: "garbage appended",
      // Holds the record magic, so recovery must check more than the magic to call it garbage.
      damage: (j) => appendBytes(j, Buffer.from("\x07garbage that is not a record at all, GWJ1 neither")),
      survivors: 3n,
    },
    { name: "zeros appended (a file extended but never written)", damage: (j) => appendBytes(j, Buffer.alloc(4096)), survivors: 3n },
  ];

  it.each(tornTails)("cuts away a torn tail ($name) and loses only that record", async ({ damage, survivors }) => {
    const dir = await tempDir();
    const journal = path.join(dir, "journal.log");
    const offsets = await threeCommits(dir);
    await damage(journal, offsets);

    const warnings: Error[] = [];
    let store = await openStore(dir, { onWarning: (w) => warnings.push(w) });
    const cutAt = offsets[Number(survivors)]!;
    expect((await store.load()).version).toBe(survivors);
    expect(plain(await store.load())).toEqual(Object.fromEntries(workloadState(survivors)));
    expect((await stat(journal)).size).toBe(cutAt);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.message).toContain(`${path.join(await realpath(dir), "journal.log")}: dropped a torn record`);
    expect(warnings[0]?.message).toContain(`at offset ${cutAt}`);

    // The store carries on: the next commit takes the lost version, and reopening is clean.
    await commitWorkload(store, 2);
    await store.close();
    warnings.length = 0;
    store = await openStore(dir, { onWarning: (w) => warnings.push(w) });
    expect(plain(await store.load())).toEqual(Object.fromEntries(workloadState(survivors + 2n)));
    expect(warnings).toEqual([]);
  });

  const midJournal: { name: string; damage: (bytes: Buffer, offsets: number[]) => Buffer; reason: RegExp }[] = [
    {
      name: "a flipped payload byte",
      damage: (b, o) => flip(b, o[1]! + 30),
      reason: /checksum mismatch, and an intact record follows/,
    },
    {
      name: "a length field blown up past the end of the file",
      damage: (b, o) => {
        b.writeUInt32BE(0x00ff_ffff, o[1]! + 4);
        return b;
      },
      reason: /extends past the end of the file, and an intact record follows at offset/,
    },
    { name: "a damaged magic", damage: (b, o) => flip(b, o[1]!), reason: /bad record magic, and an intact record follows/ },
    {
      name: "a whole record missing",
      damage: (b, o) => Buffer.concat([b.subarray(0, o[1]!), b.subarray(o[2]!)]),
      reason: /version 3 follows version 1; commits are missing/,
    },
  ];

  it.each(midJournal)("fails open loudly on corruption before intact records ($name)", async ({ damage, reason }) => {
    const dir = await tempDir();
    const journal = path.join(dir, "journal.log");
    const offsets = await threeCommits(dir);
    const damaged = damage(await readFile(journal), offsets);
    await writeFile(journal, damaged);

    const error = await FileStore.open(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreCorruptError);
    expect(error).toMatchObject({ file: path.join(await realpath(dir), "journal.log"), offset: offsets[1] });
    expect((error as StoreCorruptError).reason).toMatch(reason);
    expect((error as Error).message).toContain(`journal.log: corrupt at offset ${offsets[1]}`);
    // Nothing was truncated, and the lock was released.
    expect((await readFile(journal)).equals(damaged)).toBe(true);
    expect(existsSync(path.join(dir, "LOCK"))).toBe(false);
    await expect(FileStore.open(dir)).rejects.toBeInstanceOf(StoreCorruptError);
  });

  it("refuses a journal that skips versions past the checkpoint", async () => {
    const dir = await tempDir();
    const journal = path.join(dir, "journal.log");
    const store = await openStore(dir);
    await commitWorkload(store, 3);
    const early = await readFile(journal);
    await commitWorkload(store, 3);
    await store.compact();
    await commitWorkload(store, 2);
    await store.close();
    // Records 1..3 (older than the checkpoint at 6) then 7..8: each record is intact, but 4..6 are gone.
    const late = await readFile(journal);
    await writeFile(journal, Buffer.concat([early, late]));
    const error = await FileStore.open(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreCorruptError);
    expect((error as StoreCorruptError).reason).toMatch(/version 7 follows version 3/);
  });
});

describe("FileStore write failures", () => {
  async function fileHandlePrototype(): Promise<object> {
    const handle = await open(fileURLToPath(import.meta.url), "r");
    await handle.close();
    return Object.getPrototypeOf(handle) as object;
  }

  it.each(["write", "datasync"] as const)("rejects when %s fails, leaves state unchanged and stays usable", async (method) => {
    const dir = await tempDir();
    const journal = path.join(dir, "journal.log");
    const store = await openStore(dir);
    await store.commit(0n, [put("rule", "a", "A1")]);
    const events: CommitEvent[] = [];
    store.subscribe((e) => events.push(e));
    const sizeBefore = (await stat(journal)).size;

    const proto = (await fileHandlePrototype()) as Record<"write" | "datasync", () => Promise<unknown>>;
    vi.spyOn(proto, method).mockRejectedValueOnce(Object.assign(new Error(`EIO: i/o error, ${method}`), { code: "EIO" }));
    const error = await store.commit(1n, [put("rule", "a", "lost"), put("rule", "b", "lost")]).catch((e: unknown) => e);
    const file = path.join(await realpath(dir), "journal.log");
    expect((error as Error).message).toBe(`${file}: writing version 2 at offset ${sizeBefore} failed; nothing was committed`);
    expect(((error as Error).cause as Error).message).toContain("EIO");
    expect(plain(await store.load())).toEqual({ "rule/a": { revision: 1n, data: "A1" } });
    expect(events).toEqual([]);
    expect((await stat(journal)).size).toBe(sizeBefore);

    expect(await store.commit(1n, [put("rule", "c", "C2")])).toBe(2n);
    await store.close();
    const reopened = await openStore(dir);
    expect(plain(await reopened.load())).toEqual({ "rule/a": { revision: 1n, data: "A1" }, "rule/c": { revision: 2n, data: "C2" } });
  });

  it("refuses further commits when a failed write cannot be cut back (journal on /dev/full)", async () => {
    if (!existsSync("/dev/full")) return;
    const dir = await tempDir();
    const journal = path.join(dir, "journal.log");
    let store = await openStore(dir);
    await commitWorkload(store, 3);
    await store.compact();
    await store.close();
    await rm(journal);
    await symlink("/dev/full", journal);

    store = await openStore(dir);
    const error = await store.commit(3n, workloadMutations(4n)).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/writing version 4 at offset 0 failed; the record could not be removed/);
    expect(((error as Error).cause as NodeJS.ErrnoException).code).toBe("ENOSPC");
    expect(plain(await store.load())).toEqual(Object.fromEntries(workloadState(3n)));
    await expect(store.commit(3n, workloadMutations(4n))).rejects.toThrow(/close and reopen the store/);
    await store.close();

    await rm(journal);
    store = await openStore(dir);
    expect(await commitWorkload(store, 1)).toBe(4n);
  });
});

describe("FileStore lock", () => {
  it("refuses a second opener in this process, naming the directory and pid", async () => {
    const dir = await tempDir();
    const first = await openStore(dir);
    const error = await FileStore.open(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreLockedError);
    expect(error).toMatchObject({ dir: await realpath(dir), pid: process.pid });
    expect((error as Error).message).toContain(`store directory ${await realpath(dir)} is locked by this process (pid ${process.pid})`);
    await first.close();
    await openStore(dir);
  });

  it("takes over a lock left by a dead process", async () => {
    const dir = await tempDir();
    const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
    await new Promise((resolve) => child.once("exit", resolve));
    await writeFile(path.join(dir, "LOCK"), `${child.pid}\n`);
    const store = await openStore(dir);
    expect(readFileSync(path.join(dir, "LOCK"), "utf8")).toBe(`${process.pid}\n`);
    await store.close();
  });
});

/** A writer child process and the lines it printed. */
interface Writer {
  readonly child: ChildProcess;
  readonly lines: string[];
  readonly stderr: () => string;
  /** Resolves once the child printed `count` lines starting with `prefix`. */
  readonly waitFor: (prefix: string, count: number) => Promise<void>;
  readonly exited: Promise<void>;
}

function startWriter(dir: string): Writer {
  const child = spawn(process.execPath, [writerScript, dir, "8"], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const lines: string[] = [];
  let partial = "";
  let err = "";
  const waiters: { prefix: string; count: number; resolve: () => void }[] = [];
  const check = (): void => {
    for (const w of [...waiters]) {
      if (lines.filter((l) => l.startsWith(w.prefix)).length >= w.count) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    const parts = (partial + chunk).split("\n");
    // A line cut by the kill has no newline: it was not fully printed, so it does not count.
    partial = parts.pop()!;
    lines.push(...parts);
    check();
  });
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (err += chunk));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    child,
    lines,
    stderr: () => err,
    exited,
    waitFor: (prefix, count) =>
      new Promise<void>((resolve, reject) => {
        waiters.push({ prefix, count, resolve });
        check();
        void exited.then(() => reject(new Error(`writer exited early (code ${child.exitCode}): ${err}`)));
      }),
  };
}

describe("FileStore with a real writer process", () => {
  beforeAll(() => {
    const built = path.join(root, "dist/control-plane/src/store/file.js");
    const source = path.join(root, "control-plane/src/store/file.ts");
    if (!existsSync(built) || statSync(built).mtimeMs < statSync(source).mtimeMs) {
      throw new Error(`${built} is missing or older than ${source}: run \`npx tsc -p tsconfig.json\` (npm test builds first)`);
    }
  });

  it("locks the directory against another process, and takes the lock over once it is killed", async () => {
    const dir = await tempDir();
    const writer = startWriter(dir);
    await writer.waitFor("ack", 1);
    const error = await FileStore.open(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreLockedError);
    expect((error as StoreLockedError).pid).toBe(writer.child.pid);
    expect((error as Error).message).toContain(`${await realpath(dir)} is locked by pid ${writer.child.pid}`);

    process.kill(writer.child.pid!, "SIGKILL");
    await writer.exited;
    const store = await openStore(dir);
    expect((await store.load()).version).toBeGreaterThanOrEqual(1n);
  });

  it("loses no acknowledged commit when the writer is killed with SIGKILL at random moments", async () => {
    const dir = await tempDir();
    let previous = 0n;
    const log: string[] = [];
    for (let round = 0; round < 10; round++) {
      const writer = startWriter(dir);
      const acks = 1 + Math.floor(Math.random() * 40);
      const delay = Math.floor(Math.random() * 30);
      await writer.waitFor("ack", acks);
      await new Promise((resolve) => setTimeout(resolve, delay));
      process.kill(writer.child.pid!, "SIGKILL");
      await writer.exited;

      const opened = BigInt(writer.lines.find((l) => l.startsWith("open "))!.slice(5));
      const acked = writer.lines.filter((l) => l.startsWith("ack ")).map((l) => BigInt(l.slice(4)));
      const maxAcked = acked.at(-1)!;
      log.push(`round ${round}: opened at ${opened}, killed ${delay} ms after ack ${acks}, last ack ${maxAcked}`);
      const context = `${log.join("\n")}\nwriter stderr: ${writer.stderr()}`;
      expect(opened, context).toBe(previous);
      expect(acked, context).toEqual(acked.map((_, i) => opened + BigInt(i + 1)));

      const store = await FileStore.open(dir);
      try {
        const state = await store.load();
        // At most the one commit in flight at the kill may have landed without its ack being printed.
        expect(state.version, context).toBeGreaterThanOrEqual(maxAcked);
        expect(state.version, context).toBeLessThanOrEqual(maxAcked + 1n);
        expect(plain(state), context).toEqual(Object.fromEntries(workloadState(state.version)));
        previous = state.version;
      } finally {
        await store.close();
      }
    }
    expect(previous).toBeGreaterThanOrEqual(10n);
  });
});

function flip(bytes: Buffer, at: number): Buffer {
  bytes[at] ^= 0x5a;
  return bytes;
}

async function appendBytes(file: string, bytes: Buffer): Promise<void> {
  const handle = await open(file, "a");
  try {
    await handle.write(bytes);
  } finally {
    await handle.close();
  }
}

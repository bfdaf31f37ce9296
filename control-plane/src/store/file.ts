/**
 * The embedded, file-backed configuration store: the control plane's default, so a single machine
 * needs nothing but a data directory.
 *
 * On disk (all inside the data directory):
 * - `journal.log`: one framed record per commit, appended and fdatasync'ed before commit()
 *   resolves. A crash can only tear the record being written, which was never acknowledged.
 * - `checkpoint.dat`: the whole state at one version, replaced atomically (temp file, fsync,
 *   rename, fsync of the directory) by compaction, after which the journal is emptied.
 * - `LOCK`: the pid of the process that has the directory open.
 *
 * Every record, and the checkpoint, is framed as `magic(4) | length u32 BE | crc32 u32 BE |
 * payload`, the CRC covering length and payload, so a torn or damaged record is recognised rather
 * than parsed. Payloads are JSON with versions as decimal strings (bigint has no JSON form).
 */
import { link, mkdir, open, readFile, realpath, rename, rm, stat, unlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import { crc32 } from "node:zlib";

import {
  StoreConflictError,
  resourceKey,
  type CommitEvent,
  type ConfigStore,
  type Mutation,
  type ResourceKind,
  type StoreState,
  type StoredResource,
} from "./store.js";
import { toMutation } from "./mutation.js";

/** Tuning and reporting for a FileStore. */
export interface FileStoreOptions {
  /** Compact once the journal holds more bytes than this. Default 4 MiB. */
  readonly compactAfterBytes?: number;
  /** Compact once the journal holds this many records. Default 10,000. */
  readonly compactAfterRecords?: number;
  /**
   * Receives what no caller can: a torn journal tail cut away on open, a failed background
   * compaction, a subscriber that threw. Default: process.emitWarning.
   */
  readonly onWarning?: (warning: Error) => void;
}

/**
 * The store's files are damaged in a way that recovery must not paper over (dropping it would lose
 * acknowledged commits). Names the file and byte offset so an operator can inspect or restore it.
 */
export class StoreCorruptError extends Error {
  constructor(
    readonly file: string,
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`${file}: corrupt at offset ${offset}: ${reason}`);
    this.name = "StoreCorruptError";
  }
}

/** Another live process has the data directory open; two writers would interleave one journal. */
export class StoreLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    const who = pid === process.pid ? `this process (pid ${pid})` : `pid ${pid}`;
    super(
      `store directory ${dir} is locked by ${who}; stop it, or remove ${path.join(dir, LOCK)} ` +
        "if that process is not a control plane",
    );
    this.name = "StoreLockedError";
  }
}

/** The store was closed; its files and lock are released, so it can no longer answer. */
export class StoreClosedError extends Error {
  constructor(readonly dir: string) {
    super(`file store ${dir} is closed`);
    this.name = "StoreClosedError";
  }
}

const JOURNAL = "journal.log";
const CHECKPOINT = "checkpoint.dat";
const CHECKPOINT_TMP = "checkpoint.dat.tmp";
const LOCK = "LOCK";

const JOURNAL_MAGIC = Buffer.from("GWJ1", "latin1");
const CHECKPOINT_MAGIC = Buffer.from("GWC1", "latin1");
const HEADER_BYTES = 12;
/** Bounds a record so a damaged length field reads as damage, not as a 4 GiB allocation. */
const MAX_RECORD_BYTES = 64 * 1024 * 1024;
const MAX_CHECKPOINT_BYTES = 0xffff_ffff;

const DEFAULT_COMPACT_AFTER_BYTES = 4 * 1024 * 1024;
const DEFAULT_COMPACT_AFTER_RECORDS = 10_000;

/** Data directories (real paths) this process holds or is opening: the pid in LOCK cannot tell. */
const heldDirs = new Set<string>();

/** A configuration store kept in a local directory, durable on every commit. */
export class FileStore implements ConfigStore {
  private version: bigint;
  private readonly resources: Map<string, StoredResource>;
  private journalSize: number;
  private journalRecords: number;
  /** Compaction triggers; raised after a failed compaction so a full disk is not retried per commit. */
  private compactAtBytes: number;
  private compactAtRecords: number;
  /** Serialises commits and compactions; never rejects. */
  private queue: Promise<void> = Promise.resolve();
  /** Objects, not the functions, so one function subscribed twice gets two independent unsubscribes. */
  private readonly listeners = new Set<{ readonly listener: (event: CommitEvent) => void }>();
  private closing: Promise<void> | undefined;
  /** Set when the journal's on-disk length is unknown: appending would interleave with garbage. */
  private broken: Error | undefined;

  private constructor(
    /** Real path of the data directory. */
    readonly dir: string,
    private readonly journal: FileHandle,
    state: LoadedState,
    private readonly compactAfterBytes: number,
    private readonly compactAfterRecords: number,
    private readonly onWarning: (warning: Error) => void,
  ) {
    this.version = state.version;
    this.resources = state.resources;
    this.journalSize = state.journalSize;
    this.journalRecords = state.journalRecords;
    this.compactAtBytes = compactAfterBytes;
    this.compactAtRecords = compactAfterRecords;
  }

  /**
   * Opens (creating if needed) the store in `dir` and recovers it: reads the checkpoint, replays
   * newer journal records, cuts away a torn tail. Rejects with StoreLockedError if another process
   * has it open and StoreCorruptError if acknowledged data is damaged.
   */
  static async open(dir: string, opts: FileStoreOptions = {}): Promise<FileStore> {
    const compactAfterBytes = positiveInteger(
      opts.compactAfterBytes,
      DEFAULT_COMPACT_AFTER_BYTES,
      "compactAfterBytes",
    );
    const compactAfterRecords = positiveInteger(
      opts.compactAfterRecords,
      DEFAULT_COMPACT_AFTER_RECORDS,
      "compactAfterRecords",
    );
    const onWarning = opts.onWarning ?? ((warning: Error) => process.emitWarning(warning));

    const real = await ensureDirectory(path.resolve(dir));
    await acquireLock(real);
    let journal: FileHandle | undefined;
    try {
      // A temp checkpoint is a compaction that died before its rename: the real one is intact.
      await rm(path.join(real, CHECKPOINT_TMP), { force: true });
      const state = await readCheckpoint(path.join(real, CHECKPOINT));
      journal = await openJournal(real);
      await replayJournal(journal, path.join(real, JOURNAL), state, onWarning);
      return new FileStore(real, journal, state, compactAfterBytes, compactAfterRecords, onWarning);
    } catch (error) {
      await journal?.close().catch(() => undefined);
      await releaseLock(real).catch(() => undefined);
      throw error;
    }
  }

  /** A copy, so later commits never change a state a caller is still reading. */
  async load(): Promise<StoreState> {
    if (this.closing) throw new StoreClosedError(this.dir);
    return { version: this.version, resources: new Map(this.resources) };
  }

  commit(expectedVersion: bigint, mutations: readonly Mutation[]): Promise<bigint> {
    if (this.closing) return Promise.reject(new StoreClosedError(this.dir));
    let owned: readonly Mutation[];
    try {
      if (typeof expectedVersion !== "bigint") {
        throw new TypeError(`expectedVersion: must be a bigint, got ${typeof expectedVersion}`);
      }
      // Copied now: the caller may reuse its array while the commit waits in the queue.
      owned = Object.freeze(Array.from(mutations, (m, i) => toMutation(m, `mutations[${i}]`)));
    } catch (error) {
      return Promise.reject(error);
    }
    return this.enqueue(() => this.commitNow(expectedVersion, owned));
  }

  subscribe(listener: (event: CommitEvent) => void): () => void {
    if (this.closing) throw new StoreClosedError(this.dir);
    const entry = { listener };
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  /**
   * Folds the journal into a new checkpoint now, instead of waiting for the thresholds (for an
   * operator before a backup, and for tests). Waits behind queued commits.
   */
  compact(): Promise<void> {
    if (this.closing) return Promise.reject(new StoreClosedError(this.dir));
    return this.enqueue(() => this.compactNow());
  }

  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    const result = this.queue.then(task);
    // Compaction runs after the commit has resolved (its caller does not wait for it) but before
    // the next queued commit, so journal offsets never move under a write.
    const after = (): Promise<void> => this.compactIfDue();
    this.queue = result.then(after, after);
    return result;
  }

  private async commitNow(expectedVersion: bigint, mutations: readonly Mutation[]): Promise<bigint> {
    if (this.broken) throw this.broken;
    if (expectedVersion !== this.version) throw new StoreConflictError(expectedVersion, this.version);
    const version = this.version + 1n;
    const file = path.join(this.dir, JOURNAL);
    const payload = Buffer.from(JSON.stringify({ v: version.toString(), m: mutations }), "utf8");
    if (payload.length > MAX_RECORD_BYTES) {
      throw new RangeError(
        `${file}: commit of version ${version} is ${payload.length} bytes, ` +
          `over the ${MAX_RECORD_BYTES}-byte record limit`,
      );
    }
    const frame = encodeFrame(JOURNAL_MAGIC, payload);
    const offset = this.journalSize;
    try {
      await writeAll(this.journal, frame, offset);
      await this.journal.datasync();
    } catch (cause) {
      const cut = await this.cutJournal(offset, cause);
      throw new Error(
        `${file}: writing version ${version} at offset ${offset} failed; ` +
          (cut ? "nothing was committed" : "the record could not be removed and may reappear on reopen"),
        { cause },
      );
    }

    // Durable from here on: only now may readers and subscribers see it.
    this.journalSize = offset + frame.length;
    this.journalRecords += 1;
    this.version = version;
    for (const m of mutations) applyMutation(this.resources, version, m);
    const event: CommitEvent = Object.freeze({ version, mutations });
    for (const entry of [...this.listeners]) {
      try {
        entry.listener(event);
      } catch (error) {
        const where = `file store ${this.dir}: subscriber threw on version ${version}`;
        this.onWarning(new Error(where, { cause: error }));
      }
    }
    return version;
  }

  /**
   * Removes a partly written record so the next commit does not append after garbage (which a
   * reopen would take for mid-journal corruption). Returns false, and marks the store broken, when
   * the journal's length can no longer be trusted.
   */
  private async cutJournal(offset: number, cause: unknown): Promise<boolean> {
    try {
      await this.journal.truncate(offset);
      await this.journal.datasync();
      return true;
    } catch (error) {
      this.broken = new Error(
        `file store ${this.dir}: ${JOURNAL} could not be cut back to offset ${offset} after a failed write; ` +
          "close and reopen the store",
        { cause: new AggregateError([cause, error]) },
      );
      return false;
    }
  }

  private async compactIfDue(): Promise<void> {
    const due = this.journalSize >= this.compactAtBytes || this.journalRecords >= this.compactAtRecords;
    if (this.broken || !due) return;
    try {
      await this.compactNow();
    } catch (error) {
      this.compactAtBytes = this.journalSize + this.compactAfterBytes;
      this.compactAtRecords = this.journalRecords + this.compactAfterRecords;
      this.onWarning(error instanceof Error ? error : new Error(String(error)));
    }
  }

  private async compactNow(): Promise<void> {
    if (this.broken) throw this.broken;
    const target = path.join(this.dir, CHECKPOINT);
    const temp = path.join(this.dir, CHECKPOINT_TMP);
    const payload = JSON.stringify({
      version: this.version.toString(),
      resources: Array.from(this.resources.values(), (r) => ({
        kind: r.kind,
        id: r.id,
        revision: r.revision.toString(),
        data: r.data,
      })),
    });
    const frame = encodeFrame(CHECKPOINT_MAGIC, Buffer.from(payload, "utf8"));
    try {
      const handle = await open(temp, "w", 0o600);
      try {
        await writeAll(handle, frame, 0);
        await handle.datasync();
      } finally {
        await handle.close();
      }
      await rename(temp, target);
      await syncDirectory(this.dir);
    } catch (cause) {
      await rm(temp, { force: true }).catch(() => undefined);
      // The journal is untouched and either checkpoint (old, or new if the rename landed) plus it recovers.
      throw new Error(
        `${target}: compaction at version ${this.version} failed; the journal still holds every commit`,
        { cause },
      );
    }

    // The checkpoint covers every record now; emptying the journal only saves replay time, but the
    // next append must know the journal's exact length.
    try {
      await this.journal.truncate(0);
      await this.journal.datasync();
    } catch (cause) {
      this.broken = new Error(
        `file store ${this.dir}: ${JOURNAL} could not be emptied after checkpointing version ${this.version}; ` +
          "close and reopen the store",
        { cause },
      );
      throw this.broken;
    }
    this.journalSize = 0;
    this.journalRecords = 0;
    this.compactAtBytes = this.compactAfterBytes;
    this.compactAtRecords = this.compactAfterRecords;
  }

  private async shutdown(): Promise<void> {
    await this.queue;
    this.listeners.clear();
    try {
      await this.journal.close();
    } finally {
      await releaseLock(this.dir);
    }
  }
}

/** What open() recovers; mutated while replaying, then owned by the store. */
interface LoadedState {
  version: bigint;
  resources: Map<string, StoredResource>;
  journalSize: number;
  journalRecords: number;
}

function positiveInteger(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`FileStoreOptions.${name}: must be a positive integer, got ${value}`);
  }
  return value;
}


function applyMutation(resources: Map<string, StoredResource>, version: bigint, m: Mutation): void {
  const key = resourceKey(m.kind, m.id);
  if (m.op === "delete") {
    resources.delete(key);
    return;
  }
  resources.set(key, Object.freeze({ kind: m.kind, id: m.id, revision: version, data: m.data }));
}

function encodeFrame(magic: Buffer, payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  magic.copy(frame, 0);
  frame.writeUInt32BE(payload.length, 4);
  payload.copy(frame, HEADER_BYTES);
  frame.writeUInt32BE(crc32(payload, crc32(frame.subarray(4, 8))), 8);
  return frame;
}

type Frame = { readonly payload: Buffer; readonly end: number } | { readonly problem: string };

function decodeFrame(buf: Buffer, offset: number, magic: Buffer, maxLength: number): Frame {
  const remaining = buf.length - offset;
  if (remaining < HEADER_BYTES) return { problem: `incomplete record header (${remaining} bytes)` };
  if (!buf.subarray(offset, offset + 4).equals(magic)) return { problem: "bad record magic" };
  const length = buf.readUInt32BE(offset + 4);
  if (length > maxLength) return { problem: `implausible record length ${length}` };
  const end = offset + HEADER_BYTES + length;
  if (end > buf.length) return { problem: `record of ${length} bytes extends past the end of the file` };
  const payload = buf.subarray(offset + HEADER_BYTES, end);
  if (crc32(payload, crc32(buf.subarray(offset + 4, offset + 8))) !== buf.readUInt32BE(offset + 8)) {
    return { problem: "checksum mismatch" };
  }
  return { payload, end };
}

/** Offset of the first intact journal record at or after `from`, or -1. */
function findIntactRecord(buf: Buffer, from: number): number {
  for (let at = buf.indexOf(JOURNAL_MAGIC, from); at !== -1; at = buf.indexOf(JOURNAL_MAGIC, at + 1)) {
    if ("payload" in decodeFrame(buf, at, JOURNAL_MAGIC, MAX_RECORD_BYTES)) return at;
  }
  return -1;
}

function parseJson(payload: Buffer, file: string, offset: number): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString("utf8"));
  } catch (error) {
    // The checksum matched, so this is not a torn write: it is a bug or foreign data, never skipped.
    throw new StoreCorruptError(file, offset, `payload is not JSON (${(error as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new StoreCorruptError(file, offset, "payload is not an object");
  }
  return value as Record<string, unknown>;
}

function parseVersion(value: unknown, file: string, offset: number, field: string): bigint {
  if (typeof value !== "string" || !/^(0|[1-9][0-9]*)$/.test(value)) {
    throw new StoreCorruptError(file, offset, `${field}: not a decimal version: ${JSON.stringify(value)}`);
  }
  return BigInt(value);
}

async function readCheckpoint(file: string): Promise<LoadedState> {
  const state: LoadedState = { version: 0n, resources: new Map(), journalSize: 0, journalRecords: 0 };
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (error) {
    if (errorCode(error) === "ENOENT") return state;
    throw error;
  }
  // Written atomically, so any damage here is real: refuse rather than start from an older state.
  const frame = decodeFrame(buf, 0, CHECKPOINT_MAGIC, MAX_CHECKPOINT_BYTES);
  if ("problem" in frame) throw new StoreCorruptError(file, 0, frame.problem);
  if (frame.end !== buf.length) {
    throw new StoreCorruptError(file, frame.end, `${buf.length - frame.end} unexpected bytes after the checkpoint`);
  }
  const body = parseJson(frame.payload, file, 0);
  state.version = parseVersion(body.version, file, 0, "version");
  if (!Array.isArray(body.resources)) throw new StoreCorruptError(file, 0, "resources: not an array");
  body.resources.forEach((raw: unknown, i: number) => {
    const where = `resources[${i}]`;
    let m: Mutation;
    try {
      m = toMutation({ ...(raw as object), op: "put" }, where);
    } catch (error) {
      throw new StoreCorruptError(file, 0, (error as Error).message);
    }
    const revision = parseVersion((raw as Record<string, unknown>).revision, file, 0, `${where}.revision`);
    if (revision < 1n || revision > state.version) {
      throw new StoreCorruptError(file, 0, `${where}.revision: ${revision} outside 1..${state.version}`);
    }
    applyMutation(state.resources, revision, m);
  });
  return state;
}

async function openJournal(dir: string): Promise<FileHandle> {
  const file = path.join(dir, JOURNAL);
  try {
    // Not "a": with O_APPEND, Linux ignores write positions, and a failed write must be overwritable.
    return await open(file, "r+");
  } catch (error) {
    if (errorCode(error) !== "ENOENT") throw error;
  }
  const handle = await open(file, "wx+", 0o600);
  await syncDirectory(dir);
  return handle;
}

/**
 * Applies journal records newer than the checkpoint to `state`. A bad record with nothing intact
 * after it is a write that a crash cut short (never acknowledged): it is truncated away. A bad
 * record followed by an intact one means acknowledged commits are damaged: open fails.
 */
async function replayJournal(
  journal: FileHandle,
  file: string,
  state: LoadedState,
  onWarning: (warning: Error) => void,
): Promise<void> {
  const { size } = await journal.stat();
  const buf = Buffer.alloc(size);
  for (let read = 0; read < size; ) {
    const { bytesRead } = await journal.read(buf, read, size - read, read);
    if (bytesRead === 0) throw new Error(`${file}: file shrank while reading at offset ${read}`);
    read += bytesRead;
  }

  const checkpointVersion = state.version;
  let previous: bigint | undefined;
  let offset = 0;
  let records = 0;
  while (offset < buf.length) {
    const frame = decodeFrame(buf, offset, JOURNAL_MAGIC, MAX_RECORD_BYTES);
    if ("problem" in frame) {
      const next = findIntactRecord(buf, offset + 1);
      if (next !== -1) {
        throw new StoreCorruptError(
          file,
          offset,
          `${frame.problem}, and an intact record follows at offset ${next}; refusing to drop acknowledged commits`,
        );
      }
      await journal.truncate(offset);
      await journal.datasync();
      onWarning(
        new Error(
          `${file}: dropped a torn record of ${buf.length - offset} bytes at offset ${offset} ` +
            `(${frame.problem}); it was never acknowledged`,
        ),
      );
      break;
    }
    const body = parseJson(frame.payload, file, offset);
    const version = parseVersion(body.v, file, offset, "v");
    if (previous !== undefined && version !== previous + 1n) {
      throw new StoreCorruptError(file, offset, `version ${version} follows version ${previous}; commits are missing`);
    }
    if (!Array.isArray(body.m)) throw new StoreCorruptError(file, offset, "m: not an array");
    if (version > checkpointVersion) {
      if (version !== state.version + 1n) {
        throw new StoreCorruptError(
          file,
          offset,
          `version ${version} does not follow version ${state.version} of the checkpoint; commits are missing`,
        );
      }
      for (const [i, raw] of body.m.entries()) {
        let m: Mutation;
        try {
          m = toMutation(raw, `m[${i}]`);
        } catch (error) {
          throw new StoreCorruptError(file, offset, (error as Error).message);
        }
        applyMutation(state.resources, version, m);
      }
      state.version = version;
    }
    previous = version;
    offset = frame.end;
    records += 1;
  }

  if (records > 0 && (previous ?? 0n) <= checkpointVersion) {
    // A compaction died after its checkpoint but before emptying the journal: finish it.
    await journal.truncate(0);
    await journal.datasync();
    offset = 0;
    records = 0;
  }
  state.journalSize = offset;
  state.journalRecords = records;
}

/** Creates the data directory (0700: it holds API keys) durably, and returns its real path. */
async function ensureDirectory(dir: string): Promise<string> {
  let first: string | undefined;
  try {
    first = await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new Error(`cannot create store directory ${dir}`, { cause: error });
  }
  if (first !== undefined) {
    // New directory entries are only durable once each parent that gained one is synced.
    for (let d = dir; d !== path.dirname(d); d = path.dirname(d)) {
      await syncDirectory(path.dirname(d));
      if (d === first) break;
    }
  }
  const info = await stat(dir);
  if (!info.isDirectory()) throw new Error(`store directory ${dir} is not a directory`);
  return realpath(dir);
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function writeAll(handle: FileHandle, buf: Buffer, position: number): Promise<void> {
  for (let written = 0; written < buf.length; ) {
    const { bytesWritten } = await handle.write(buf, written, buf.length - written, position + written);
    if (bytesWritten === 0) throw new Error(`write made no progress at offset ${position + written}`);
    written += bytesWritten;
  }
}

/**
 * Takes the directory's LOCK file. It is created complete (written under a temp name, then
 * hard-linked into place, which fails if LOCK exists), so a reader never sees it half written. A
 * lock whose pid is dead, or is this process's own pid while this process does not hold the
 * directory (a restarted container reuses pids), is stale and taken over.
 */
async function acquireLock(dir: string): Promise<void> {
  if (heldDirs.has(dir)) throw new StoreLockedError(dir, process.pid);
  heldDirs.add(dir);
  const lock = path.join(dir, LOCK);
  const temp = path.join(dir, `${LOCK}.${process.pid}.${Math.random().toString(36).slice(2)}`);
  try {
    const handle = await open(temp, "wx", 0o600);
    try {
      await handle.writeFile(`${process.pid}\n`);
    } finally {
      await handle.close();
    }
    for (let attempt = 0; ; attempt++) {
      try {
        await link(temp, lock);
        return;
      } catch (error) {
        if (errorCode(error) !== "EEXIST") throw error;
      }
      const holder = await readLockPid(lock);
      if (holder !== undefined && holder !== process.pid && (await processAlive(holder))) {
        throw new StoreLockedError(dir, holder);
      }
      if (attempt >= 3) throw new Error(`store directory ${dir}: could not take over the stale lock ${lock}`);
      // Two processes taking over the same stale lock at once could both succeed here; the window
      // is one unlink+link, and Node offers no flock to close it.
      await unlink(lock).catch((error: unknown) => {
        if (errorCode(error) !== "ENOENT") throw error;
      });
    }
  } catch (error) {
    heldDirs.delete(dir);
    throw error;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

async function releaseLock(dir: string): Promise<void> {
  try {
    const lock = path.join(dir, LOCK);
    if ((await readLockPid(lock)) === process.pid) await unlink(lock);
  } finally {
    heldDirs.delete(dir);
  }
}

/** The pid in a lock file; undefined when the file is gone or holds no pid (nothing to respect). */
async function readLockPid(lock: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(lock, "utf8");
  } catch (error) {
    if (errorCode(error) === "ENOENT") return undefined;
    throw error;
  }
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

async function processAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return errorCode(error) === "EPERM";
  }
  // A killed process its parent has not reaped yet still answers signal 0, but holds nothing.
  try {
    const line = await readFile(`/proc/${pid}/stat`, "utf8");
    const state = line.charAt(line.lastIndexOf(")") + 2);
    return state !== "Z" && state !== "X";
  } catch {
    return true;
  }
}

function errorCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null || !("code" in error)) return undefined;
  return String((error as { code: unknown }).code);
}

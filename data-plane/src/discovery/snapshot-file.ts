import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { open, readFile, rename, unlink } from "node:fs/promises";
import path from "node:path";
import { SnapshotSchema, type Snapshot } from "../../../proto/gen/gateway/v1/snapshot_pb.js";

/**
 * The data plane's snapshot cache file: the last applied snapshot, so a data plane started while the
 * control plane is unreachable can serve at once (static stability, as Kong's hybrid mode). Written
 * atomically (temp file, fsync, rename, fsync of the directory): a crash leaves the old file or the
 * new one, never a torn one. Writes are coalesced: only the newest pending snapshot is written.
 */
export class SnapshotFile {
  private pending: Snapshot | undefined;
  private writing: Promise<void> | undefined;

  constructor(
    readonly file: string,
    private readonly onError: (err: Error) => void = () => undefined,
  ) {}

  /** Reads the cached snapshot; undefined when there is none. Throws on a corrupt file. */
  async load(): Promise<Snapshot | undefined> {
    let data: Buffer;
    try {
      data = await readFile(this.file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    try {
      return fromBinary(SnapshotSchema, data);
    } catch (err) {
      throw new Error(`snapshot cache ${this.file} is not a snapshot: ${(err as Error).message}`);
    }
  }

  /** Schedules writing `snapshot`; returns when it (or a newer one) is on disk. */
  save(snapshot: Snapshot): Promise<void> {
    this.pending = snapshot;
    this.writing ??= this.drain().finally(() => {
      this.writing = undefined;
    });
    return this.writing;
  }

  /** Waits for pending writes. */
  async flush(): Promise<void> {
    while (this.writing !== undefined) await this.writing;
  }

  private async drain(): Promise<void> {
    while (this.pending !== undefined) {
      const snapshot = this.pending;
      this.pending = undefined;
      try {
        await writeAtomically(this.file, toBinary(SnapshotSchema, snapshot));
      } catch (err) {
        this.onError(err as Error);
      }
    }
  }
}

async function writeAtomically(file: string, data: Uint8Array): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  await rename(tmp, file);
  const dir = await open(path.dirname(file), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

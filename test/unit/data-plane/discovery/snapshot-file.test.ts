import { create } from "@bufbuild/protobuf";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ResourceSet } from "../../../../data-plane/src/discovery/resources.js";
import { SnapshotFile } from "../../../../data-plane/src/discovery/snapshot-file.js";
import { SnapshotSchema } from "../../../../proto/gen/gateway/v1/snapshot_pb.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "gw-snapfile-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function snapshot(version: bigint, names: string[]) {
  return create(SnapshotSchema, {
    version,
    resources: names.map((n) => ({ name: `tenant/${n}`, revision: version, kind: { case: "tenant", value: { id: n, name: n } } })),
  });
}

describe("SnapshotFile", () => {
  it("has nothing before the first save, then returns the newest saved snapshot", async () => {
    const f = new SnapshotFile(path.join(dir, "snap.bin"));
    expect(await f.load()).toBeUndefined();
    await Promise.all([f.save(snapshot(1n, ["a"])), f.save(snapshot(2n, ["a", "b"])), f.save(snapshot(3n, ["c"]))]);
    await f.flush();
    const loaded = await f.load();
    expect(loaded?.version).toBe(3n);
    expect(loaded?.resources.map((r) => r.name)).toEqual(["tenant/c"]);
    expect((await stat(path.join(dir, "snap.bin"))).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["snap.bin"]); // no temp files left behind
  });

  it("refuses a corrupt file with a message naming it", async () => {
    const file = path.join(dir, "snap.bin");
    await writeFile(file, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]));
    await expect(new SnapshotFile(file).load()).rejects.toThrow(`snapshot cache ${file} is not a snapshot`);
  });

  it("reports write errors instead of throwing into the request path", async () => {
    const errors: Error[] = [];
    const f = new SnapshotFile(path.join(dir, "missing-dir", "snap.bin"), (e) => errors.push(e));
    await f.save(snapshot(1n, ["a"]));
    expect(errors).toHaveLength(1);
    expect(errors[0].message).toMatch(/ENOENT/);
  });

  it("seeds a resource set that later deltas apply to", () => {
    const set = ResourceSet.of(snapshot(5n, ["a", "b"]));
    const next = set.apply({ $typeName: "gateway.v1.Delta", baseVersion: 5n, version: 6n, upserted: [], removed: ["tenant/a"] });
    expect(next.version).toBe(6n);
    expect(next.snapshot().resources.map((r) => r.name)).toEqual(["tenant/b"]);
    expect(set.size).toBe(2); // the old set is untouched
  });
});

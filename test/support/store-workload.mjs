/**
 * The deterministic workload of the FileStore tests: what version `v` commits is a pure function
 * of `v`, so a test can rebuild the exact expected state for whatever version a store reopens at,
 * including after a child process that was writing it is killed.
 */

/** Mutations committed as version `version` (bigint): puts, overwrites, deletes, a no-op delete. */
export function workloadMutations(version) {
  const v = Number(version);
  const mutations = [
    // One resource per version, so every acknowledged commit leaves its own trace.
    { op: "put", kind: "apikey", id: `v${v}`, data: JSON.stringify({ v }) },
    // Overwrites: replaying out of order or twice would show in data and revision.
    { op: "put", kind: "rule", id: `r${v % 7}`, data: JSON.stringify({ v, pad: "x".repeat((v * 37) % 500) }) },
  ];
  if (v % 3 === 0) mutations.push({ op: "delete", kind: "rule", id: `r${(v + 2) % 7}` });
  if (v % 5 === 0) mutations.push({ op: "delete", kind: "apikey", id: `v${v - 4}` });
  if (v % 11 === 0) mutations.push({ op: "delete", kind: "upstream", id: "never-existed" });
  return mutations;
}

/** State after versions 1..version: key `${kind}/${id}` → { revision, data }. */
export function workloadState(version) {
  const resources = new Map();
  for (let v = 1n; v <= version; v++) {
    for (const m of workloadMutations(v)) {
      const key = `${m.kind}/${m.id}`;
      if (m.op === "put") resources.set(key, { revision: v, data: m.data });
      else resources.delete(key);
    }
  }
  return resources;
}

import type { CompiledBackend, CompiledConfig, CompiledRoute, CompiledSplitRule } from "../config/compile.js";

/**
 * Names of the fleet-wide sequences: `gw:seq:{<id>}:<revision>`.
 *
 * - `<id>` is a backend id (an upstream id, or "rule/<rule>" for a rule's inline targets, see
 *   CompiledBackend.id) or a split rule's id, "rule/<rule>/split/<index>". The braces are a Redis
 *   Cluster hash tag: all revisions of one id live in one slot.
 * - `<revision>` is the backend's store revision, so any edit (a weight change included) starts a
 *   new sequence at position 0 instead of continuing an old cycle with new weights. Compiled split
 *   rules do not carry their rule's revision, so a split rule's revision is "w" + a fingerprint of
 *   its weighted choices: a weight change likewise moves it to a new key, and every data plane
 *   computes the same name from the same snapshot.
 *
 * Names are computed once per compiled object and cached, so the request path only reads a WeakMap.
 */

/** Prefix of every sequence key; the cleanup sweep scans `gw:seq:*`. */
export const SEQUENCE_KEY_PREFIX = "gw:seq:";

/** The key of one sequence. */
export function sequenceKey(id: string, revision: string): string {
  return `${SEQUENCE_KEY_PREFIX}{${id}}:${revision}`;
}

/** Splits a key back into id and revision; undefined for keys not of this layout. */
export function parseSequenceKey(key: string): { id: string; revision: string } | undefined {
  if (!key.startsWith(SEQUENCE_KEY_PREFIX) || key.charAt(SEQUENCE_KEY_PREFIX.length) !== "{") return undefined;
  const close = key.lastIndexOf("}:");
  if (close <= SEQUENCE_KEY_PREFIX.length) return undefined;
  const revision = key.slice(close + 2);
  if (revision === "") return undefined;
  return { id: key.slice(SEQUENCE_KEY_PREFIX.length + 1, close), revision };
}

const backendKeys = new WeakMap<CompiledBackend, string>();
const splitKeys = new WeakMap<CompiledSplitRule, string>();

/** The sequence of a backend's balancer. */
export function backendSequenceKey(backend: CompiledBackend): string {
  let key = backendKeys.get(backend);
  if (key === undefined) {
    key = sequenceKey(backend.id, String(backend.revision));
    backendKeys.set(backend, key);
  }
  return key;
}

/** The sequence of a split rule's weighted choice (the rule's `index`-th split rule). */
export function splitSequenceKey(route: CompiledRoute, index: number, split: CompiledSplitRule): string {
  let key = splitKeys.get(split);
  if (key === undefined) {
    key = sequenceKey(`rule/${route.ruleId}/split/${index}`, splitFingerprint(split));
    splitKeys.set(split, key);
  }
  return key;
}

/**
 * "w" + 8 hex digits of FNV-1a over the choices' keys and weights: identical on every data plane
 * for one snapshot, different as soon as a weight (or the list of choices) changes.
 */
function splitFingerprint(split: CompiledSplitRule): string {
  let h = 0x811c9dc5;
  for (const c of split.choices) {
    const s = `${c.key}=${c.weight};`;
    for (let i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
  }
  return `w${(h >>> 0).toString(16).padStart(8, "0")}`;
}

/** Whether a backend's algorithm can be driven by a sequence (see balancer/factory.ts isSequenced). */
function sequencedAlgorithm(backend: CompiledBackend): boolean {
  return backend.algorithm === "round-robin" || backend.algorithm === "weighted-round-robin";
}

const configKeys = new WeakMap<CompiledConfig, ReadonlySet<string>>();

/**
 * Every sequence key a configuration may use: its round-robin and weighted backends and its split
 * rules. Cached per configuration, so comparing the previous and the next costs one computation each.
 */
export function sequenceKeysOf(config: CompiledConfig): ReadonlySet<string> {
  let keys = configKeys.get(config);
  if (keys !== undefined) return keys;
  const set = new Set<string>();
  for (const backend of config.backends.values()) if (sequencedAlgorithm(backend)) set.add(backendSequenceKey(backend));
  for (const route of config.routes) route.split.forEach((sr, i) => set.add(splitSequenceKey(route, i, sr)));
  configKeys.set(config, set);
  keys = set;
  return keys;
}

/**
 * Keys of `previous` that `next` no longer uses: their rule or upstream was deleted or
 * re-versioned. These are the only keys a data plane deletes on its own authority.
 */
export function retiredSequenceKeys(previous: CompiledConfig | undefined, next: CompiledConfig): string[] {
  if (previous === undefined) return [];
  const now = sequenceKeysOf(next);
  const out: string[] = [];
  for (const k of sequenceKeysOf(previous)) if (!now.has(k)) out.push(k);
  return out;
}

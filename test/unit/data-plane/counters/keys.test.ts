import { describe, expect, it } from "vitest";
import {
  backendSequenceKey,
  parseSequenceKey,
  retiredSequenceKeys,
  sequenceKey,
  sequenceKeysOf,
  splitSequenceKey,
} from "../../../../data-plane/src/counters/keys.js";
import { LocalSequenceSource } from "../../../../data-plane/src/counters/local.js";
import { followConfig } from "../../../../data-plane/src/counters/follow-config.js";
import type { CompiledConfig } from "../../../../data-plane/src/config/compile.js";
import { compile, route, splitRule, upstream, weightedRule } from "./config.js";

describe("sequence key layout", () => {
  it.each([
    { id: "up-1", revision: "42", key: "gw:seq:{up-1}:42" },
    { id: "rule/r1", revision: "7", key: "gw:seq:{rule/r1}:7" },
    { id: "rule/r1/split/0", revision: "w0a1b2c3d", key: "gw:seq:{rule/r1/split/0}:w0a1b2c3d" },
  ])("$id at $revision is $key, and parses back", ({ id, revision, key }) => {
    expect(sequenceKey(id, revision)).toBe(key);
    expect(parseSequenceKey(key)).toEqual({ id, revision });
  });

  it.each(["gw:seq:", "gw:seq:up:1", "gw:seq:{up}:", "other:{up}:1", "gw:seq:{}x"])("refuses %s", (key) => {
    expect(parseSequenceKey(key)).toBeUndefined();
  });

  it("names backends by id and store revision, split rules by rule, index and a weight fingerprint", () => {
    const config = compile(5n, [
      { revision: 3n, value: weightedRule("inline", { stable: 90, canary: 10 }) },
      { revision: 4n, value: splitRule("split", "v1", { v1: 90, v2: 10 }) },
    ], [
      { revision: 1n, value: upstream("v1", ["a", "b"]) },
      { revision: 2n, value: upstream("v2", ["c"], "least-connections") },
    ]);
    const inline = route(config, "inline");
    expect(backendSequenceKey(inline.backend)).toBe("gw:seq:{rule/inline}:3");
    expect(backendSequenceKey(config.backends.get("v1")!)).toBe("gw:seq:{v1}:1");
    const split = route(config, "split");
    expect(splitSequenceKey(split, 0, split.split[0])).toMatch(/^gw:seq:\{rule\/split\/split\/0\}:w[0-9a-f]{8}$/);
    // least-connections is not sequenced: no key for v2.
    expect([...sequenceKeysOf(config)].sort()).toEqual(
      ["gw:seq:{rule/inline}:3", "gw:seq:{v1}:1", splitSequenceKey(split, 0, split.split[0])].sort(),
    );
  });

  it("gives every data plane the same split key for one snapshot, and a new one when a weight changes", () => {
    const build = (canary: number, revision: bigint) =>
      compile(revision, [{ revision, value: splitRule("s", "v1", { v1: 100 - canary, v2: canary }) }], [
        { revision: 1n, value: upstream("v1", ["a"]) },
        { revision: 1n, value: upstream("v2", ["b"]) },
      ]);
    const key = (c: CompiledConfig) => splitSequenceKey(route(c, "s"), 0, route(c, "s").split[0]);
    expect(key(build(10, 2n))).toBe(key(build(10, 2n)));
    // An edit that keeps the weights (revision 3) keeps the sequence; a weight change starts a new one.
    expect(key(build(10, 3n))).toBe(key(build(10, 2n)));
    expect(key(build(20, 3n))).not.toBe(key(build(10, 2n)));
  });
});

describe("retired keys", () => {
  const v1 = { revision: 1n, value: upstream("v1", ["a", "b"]) };
  const base = compile(10n, [
    { revision: 3n, value: weightedRule("keep", { a: 50, b: 50 }) },
    { revision: 4n, value: weightedRule("edit", { a: 90, b: 10 }) },
    { revision: 5n, value: weightedRule("drop", { a: 90, b: 10 }) },
  ], [v1]);

  it("are the keys of deleted and re-versioned rules, nothing else", () => {
    const next = compile(12n, [
      { revision: 3n, value: weightedRule("keep", { a: 50, b: 50 }) },
      { revision: 12n, value: weightedRule("edit", { a: 80, b: 20 }) },
    ], [v1]);
    expect(retiredSequenceKeys(base, next).sort()).toEqual(["gw:seq:{rule/drop}:5", "gw:seq:{rule/edit}:4"]);
    expect(retiredSequenceKeys(undefined, next)).toEqual([]);
    expect(retiredSequenceKeys(next, next)).toEqual([]);
  });

  it("reach the source through followConfig on every applied snapshot", () => {
    const listeners: ((c: CompiledConfig, p: CompiledConfig | undefined) => void)[] = [];
    const feed = { current: undefined, onApply: (l: (typeof listeners)[number]) => (listeners.push(l), () => undefined) };
    const source = new LocalSequenceSource();
    followConfig(feed, source);
    listeners[0](base, undefined);
    for (const k of sequenceKeysOf(base)) source.next(k, 10);
    expect(source.size).toBe(4); // keep, edit, drop, v1
    const next = compile(11n, [{ revision: 3n, value: weightedRule("keep", { a: 50, b: 50 }) }], [v1]);
    listeners[0](next, base);
    expect(source.size).toBe(2);
  });
});

describe("LocalSequenceSource", () => {
  it("counts each key from 0, wraps at the cycle, answers synchronously and forgets retired keys", () => {
    const s = new LocalSequenceSource();
    expect([0, 1, 2, 3, 4].map(() => s.next("a", 3))).toEqual([0, 1, 2, 0, 1]);
    expect(s.next("b", 3)).toBe(0);
    s.retire(["a"]);
    expect(s.next("a", 3)).toBe(0);
    expect(s.fallback).toBe(false);
  });
});

/**
 * Redis sequence sources for the tests: created against the test's own redis-server, with
 * recorded state changes, and closed (every one of them) at teardown.
 */
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach } from "vitest";
import { RedisSequenceSource, type RedisSequenceOptions } from "../../../../data-plane/src/counters/redis.js";
import type { SequenceState } from "../../../../data-plane/src/counters/source.js";
import { RedisServer } from "./redis-server.js";

/** A source plus the state changes it reported. */
export interface TestSource {
  readonly source: RedisSequenceSource;
  readonly states: { state: SequenceState; reason: string }[];
  readonly errors: string[];
}

const open = new Set<RedisSequenceSource>();

/** A source on `url` (no periodic sweep unless asked), recording its state changes. */
export function redisSource(url: string, opts: Partial<RedisSequenceOptions> = {}): TestSource {
  const states: TestSource["states"] = [];
  const errors: string[] = [];
  const source = new RedisSequenceSource({
    url,
    sweepIntervalMs: 0,
    ...opts,
    onState: (state, reason) => states.push({ state, reason }),
    onError: (during, err) => errors.push(`${during}: ${err.message}`),
  });
  open.add(source);
  return { source, states, errors };
}

/** `count` sources that are all counting. */
export async function countingSources(url: string, count: number, opts: Partial<RedisSequenceOptions> = {}): Promise<TestSource[]> {
  const list = Array.from({ length: count }, () => redisSource(url, opts));
  await Promise.all(list.map((s) => waitCounting(s.source)));
  return list;
}

/** Waits (bounded by a generous cap, for failures only) until the source counts again. */
export async function waitCounting(source: RedisSequenceSource, timeoutMs = 15_000): Promise<void> {
  if (!(await source.ready(timeoutMs))) throw new Error(`source did not reach "counting" within ${timeoutMs} ms (state ${source.state})`);
}

/** Closes every source created by {@link redisSource}. */
export async function closeSources(): Promise<void> {
  const list = [...open];
  open.clear();
  await Promise.all(list.map((s) => s.close()));
}

/** Polls `check` once per event-loop turn (plus a short pause) until it holds; a cap only bounds a failure. */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Counts occurrences. */
export function tally(values: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}

/** Deterministic uniform [0, 1) (mulberry32), so fallback distributions are reproducible. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * One redis-server for a test file: started before its tests, flushed with statistics reset before
 * each, sources closed after each, stopped at the end. The fields are set once the file's
 * beforeAll ran, so read them inside tests.
 */
export function useRedisServer(): { server: RedisServer; inspect: Redis } {
  const ctx = {} as { server: RedisServer; inspect: Redis };
  beforeAll(async () => {
    ctx.server = await RedisServer.start();
    ctx.inspect = ctx.server.client();
  });
  afterAll(async () => {
    await closeSources();
    await ctx.server.stop();
  });
  beforeEach(async () => {
    await ctx.inspect.flushall();
    await ctx.inspect.config("RESETSTAT");
  });
  afterEach(closeSources);
  return ctx;
}

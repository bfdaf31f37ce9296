import { Redis } from "ioredis";
import { randomPosition, type RandomSource, type SequenceSource, type SequenceState } from "./source.js";
import { sweepSequenceKeys, type SweepResult } from "./sweep.js";

/**
 * Fleet-wide sequences in Redis: every pick of a rule's split or an upstream's balancer takes the
 * next position of one global counter (keys.ts names them), so over each cycle every target gets
 * exactly its share across all data planes, however traffic is spread over them.
 *
 * Cost. Picks for one key are coalesced: all picks requested in one turn of the event loop, and all
 * picks requested while that key's round trip is in flight, become one `INCRBY key n`, and the
 * returned range [v-n, v) is handed out in request order. Keys flushed together share one pipeline
 * (one write). A busy node therefore sends at most one INCRBY per key per round trip, however many
 * requests it serves; a quiet one adds one loopback round trip to a pick.
 *
 * Lease mode (`lease` > 0) reserves positions in blocks and hands them out locally: a node holds
 * up to `lease` positions per key and tops them up (INCRBY lease − held) when half are used, so
 * picks almost never wait. The price is exactness: positions are still each used once, but each
 * node holds up to `lease` of them unused at any time, so counts over any window may be off by up to
 * nodes × lease positions, and what a node holds when it stops (or a key is retired) is a
 * permanent gap of at most `lease` positions.
 *
 * Failure. Commands have a bounded timeout, nothing is queued while disconnected (ioredis's offline
 * queue is off and commands are not resent on reconnect), and the first failed or late round trip
 * switches the source to fallback: waiting picks and all later ones get a uniformly random position
 * of their cycle, i.e. a weighted random target, synchronously and without failing. A PING probe
 * runs on a timer while in fallback; the first answer switches back to counting. Local state
 * (lease blocks) is dropped across a fallback, since Redis may have restarted empty meanwhile.
 *
 * Keys get a TTL (PEXPIRE after the INCRBY that creates them, refreshed at most every
 * `expireRefreshMs` per key while in use), are deleted when a rule or upstream is removed or
 * re-versioned (`retire`, called on snapshot apply), and a periodic sweep (sweep.ts) gives a TTL to
 * keys that lost theirs and removes older revisions of ids this node serves.
 */

/** Options of a Redis sequence source. */
export interface RedisSequenceOptions {
  /** redis://[user:pass@]host:port[/db] or rediss:// */
  readonly url: string;
  /** Positions reserved per INCRBY and handed out locally; 0 (default) for exact, coalesced picks. */
  readonly lease?: number;
  /** A round trip not answered within this falls back to random (default 100 ms). */
  readonly commandTimeoutMs?: number;
  /** TCP connect timeout (default 1,000 ms). */
  readonly connectTimeoutMs?: number;
  /** Longest pause between reconnection attempts (default 1,000 ms). */
  readonly maxReconnectDelayMs?: number;
  /** TTL of the sequence keys (default 24 h): how long an unused sequence survives. */
  readonly ttlMs?: number;
  /** Least time between two PEXPIREs of one key by this node (default min(5 s, ttl / 4)). */
  readonly expireRefreshMs?: number;
  /** Pause between PING probes while in fallback (default 500 ms). */
  readonly probeIntervalMs?: number;
  /** Pause between cleanup sweeps (default 60 s, jittered); 0 disables them. */
  readonly sweepIntervalMs?: number;
  /** Uniform [0, 1) for fallback positions (Math.random by default). */
  readonly random?: RandomSource;
  /** State changes (logs, metrics, the report's counters_fallback). */
  readonly onState?: (state: SequenceState, reason: string) => void;
  /** Errors that change nothing for picks: a failed delete or sweep, a reply error on one key. */
  readonly onError?: (during: string, err: Error) => void;
  /** After each sweep. */
  readonly onSweep?: (result: SweepResult) => void;
}

/** Counters for tests and benchmarks. */
export interface RedisSequenceStats {
  /** Positions handed out from Redis ranges. */
  countedPicks: number;
  /** Positions drawn at random (fallback, connecting, closed, or a failed round trip). */
  fallbackPicks: number;
  /** INCRBY commands sent. */
  incrbyCommands: number;
  /** Pipelines sent (each one write and one round trip). */
  roundTrips: number;
  /** Positions reserved with INCRBY (≥ countedPicks; the difference is held or lost lease). */
  reservedPositions: number;
}

/** One key's part of a round trip: how many positions it asked for, and whether with a PEXPIRE. */
interface Sent {
  readonly st: KeyState;
  readonly n: number;
  readonly expire: boolean;
}

/** Per-key state: waiting picks and, in lease mode, positions held. */
interface KeyState {
  readonly key: string;
  /** Resolvers of waiting picks and their cycles (parallel arrays, in request order). */
  resolvers: ((position: number) => void)[];
  cycles: number[];
  /** Held positions as [from, to) pairs, oldest first (lease mode). */
  ranges: number[];
  inFlight: boolean;
  queued: boolean;
  /** When this node next refreshes the key's TTL (epoch ms); 0: with the next INCRBY. */
  expireDue: number;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** A round trip or probe that got no answer in time (as opposed to one that failed outright). */
class Deadline extends Error {}

/** The fleet-wide SequenceSource. */
export class RedisSequenceSource implements SequenceSource {
  readonly kind = "redis" as const;
  readonly stats: RedisSequenceStats = { countedPicks: 0, fallbackPicks: 0, incrbyCommands: 0, roundTrips: 0, reservedPositions: 0 };
  readonly lease: number;
  readonly ttlMs: number;
  private readonly redis: Redis;
  private readonly timeoutMs: number;
  private readonly refreshMs: number;
  private readonly lowWater: number;
  private readonly random: RandomSource;
  private mode: SequenceState = "connecting";
  /** Bumped on every switch between counting and not: answers from an older epoch are dropped. */
  private epoch = 0;
  private keys = new Map<string, KeyState>();
  private readonly inFlight = new Set<KeyState>();
  private dirty: KeyState[] = [];
  private flushScheduled = false;
  private probing = false;
  private sweeping = false;
  private liveKeys: ReadonlySet<string> = new Set();
  private lastError = "";
  private readonly readyWaiters = new Set<(ok: boolean) => void>();
  private readonly probeTimer: NodeJS.Timeout;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: RedisSequenceOptions) {
    const lease = opts.lease ?? 0;
    if (!Number.isSafeInteger(lease) || lease < 0) throw new RangeError(`lease must be a non-negative integer, got ${lease}`);
    this.lease = lease;
    this.lowWater = Math.floor(lease / 2);
    this.timeoutMs = opts.commandTimeoutMs ?? 100;
    this.ttlMs = opts.ttlMs ?? DAY_MS;
    this.refreshMs = opts.expireRefreshMs ?? Math.min(5_000, Math.floor(this.ttlMs / 4));
    this.random = opts.random ?? Math.random;
    const maxDelay = opts.maxReconnectDelayMs ?? 1_000;
    this.redis = new Redis(opts.url, {
      // A backstop only: our own deadline (with a grace turn, see withDeadline) decides first.
      commandTimeout: this.timeoutMs * 4,
      connectTimeout: opts.connectTimeoutMs ?? 1_000,
      // Never buffer while Redis is away: a command either goes out now or fails now.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 10), maxDelay),
    });
    // ioredis reports connection errors as events; they become state changes (close/probe) below.
    this.redis.on("error", (err: Error) => {
      this.lastError = err.message;
    });
    this.redis.on("close", () => {
      if (this.mode === "counting") this.enterFallback(`connection to Redis closed${this.lastError ? ` (${this.lastError})` : ""}`);
    });
    this.redis.on("ready", () => this.probe());
    this.probeTimer = setInterval(() => this.probe(), opts.probeIntervalMs ?? 500);
    this.probeTimer.unref();
    this.scheduleSweep();
  }

  get state(): SequenceState {
    return this.mode;
  }

  get fallback(): boolean {
    return this.mode !== "counting";
  }

  /**
   * Resolves true once counting (connected and answering), or false after `timeoutMs`: a data plane
   * waits for this before serving, briefly, so its first picks are counted, and starts in fallback
   * when Redis is down.
   */
  ready(timeoutMs: number): Promise<boolean> {
    if (this.mode === "counting") return Promise.resolve(true);
    if (this.mode === "closed") return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.readyWaiters.delete(done);
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.readyWaiters.add(done);
    });
  }

  next(key: string, cycle: number): number | Promise<number> {
    if (this.mode !== "counting") {
      this.stats.fallbackPicks++;
      return randomPosition(cycle, this.random);
    }
    let st = this.keys.get(key);
    if (st === undefined) {
      st = { key, resolvers: [], cycles: [], ranges: [], inFlight: false, queued: false, expireDue: 0 };
      this.keys.set(key, st);
    }
    if (st.resolvers.length === 0 && st.ranges.length > 0) {
      const position = take(st.ranges);
      this.stats.countedPicks++;
      if (!st.inFlight && held(st.ranges) <= this.lowWater) this.schedule(st); // fetch the next block early
      return position;
    }
    const state = st;
    return new Promise<number>((resolve) => {
      state.resolvers.push(resolve);
      state.cycles.push(cycle);
      this.schedule(state);
    });
  }

  retire(keys: readonly string[]): void {
    if (keys.length === 0) return;
    // Picks already waiting on a retired key still get their positions (their requests were routed
    // with the old configuration); only the bookkeeping goes.
    for (const k of keys) this.keys.delete(k);
    if (this.mode !== "counting") return; // the TTL removes them
    const pipeline = this.redis.pipeline();
    for (const k of keys) pipeline.unlink(k); // one command per key: works across Cluster slots
    pipeline.exec().catch((err: Error) => this.opts.onError?.("deleting retired sequences", err));
  }

  setLiveKeys(keys: ReadonlySet<string>): void {
    this.liveKeys = keys;
    for (const k of this.keys.keys()) if (!keys.has(k)) this.keys.delete(k);
  }

  /** Runs one cleanup sweep now (the timer runs them periodically); resolves undefined when not counting. */
  async sweep(): Promise<SweepResult | undefined> {
    if (this.mode !== "counting" || this.sweeping) return undefined;
    this.sweeping = true;
    try {
      const result = await sweepSequenceKeys(this.redis, this.liveKeys, { ttlMs: this.ttlMs });
      this.opts.onSweep?.(result);
      return result;
    } finally {
      this.sweeping = false;
    }
  }

  async close(): Promise<void> {
    if (this.mode === "closed") return;
    this.setMode("closed", "closed");
    clearInterval(this.probeTimer);
    clearTimeout(this.sweepTimer);
    this.releaseAll();
    for (const w of [...this.readyWaiters]) w(false);
    try {
      await withDeadline(this.redis.quit(), 500);
    } catch {
      // Not connected, or not answering: drop the socket below.
    }
    this.redis.disconnect();
  }

  // ---- batching ----

  private schedule(st: KeyState): void {
    if (st.inFlight || st.queued) return;
    st.queued = true;
    this.dirty.push(st);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // setImmediate, not nextTick: picks of every request parsed in this turn of the loop join the batch.
    setImmediate(this.flush);
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const batch = this.dirty;
    this.dirty = [];
    if (this.mode !== "counting") return; // enterFallback answered them
    const now = Date.now();
    const sent: Sent[] = [];
    for (const st of batch) {
      st.queued = false;
      // Lease mode tops the block up to `lease` held positions (never more, which is what bounds
      // the error), on top of what waiting picks take.
      const n = st.resolvers.length + (this.lease > 0 ? Math.max(0, this.lease - held(st.ranges)) : 0);
      if (n === 0 || st.inFlight) continue;
      st.inFlight = true;
      this.inFlight.add(st);
      const expire = now >= st.expireDue;
      if (expire) st.expireDue = now + this.refreshMs;
      sent.push({ st, n, expire });
    }
    if (sent.length === 0) return;
    this.stats.roundTrips++;
    this.stats.incrbyCommands += sent.length;
    const epoch = this.epoch;
    withDeadline(this.send(sent), this.timeoutMs).then(
      (results) => {
        for (let i = 0; i < sent.length; i++) {
          if (epoch !== this.epoch) return; // a fallback answered these picks already
          const { st, n, expire } = sent[i];
          const [err, value] = results[i] ?? [new Error("no reply"), undefined];
          this.settle(st, n, expire, err, value);
        }
      },
      (err: Error) => {
        if (epoch === this.epoch && this.mode === "counting") this.enterFallback(`Redis round trip failed: ${err.message}`);
      },
    );
  };

  /**
   * One round trip: a lone INCRBY as a plain command (the common case on a quiet node, and cheaper
   * than a pipeline), otherwise one pipeline with each key's INCRBY, followed by its PEXPIRE when
   * due (after, so a key the INCRBY creates gets its TTL in the same round trip). Resolves with one
   * [error, INCRBY reply] per sent key.
   */
  private async send(sent: readonly Sent[]): Promise<[Error | null, unknown][]> {
    if (sent.length === 1 && !sent[0].expire) {
      try {
        return [[null, await this.redis.incrby(sent[0].st.key, sent[0].n)]];
      } catch (err) {
        // A reply error concerns this key only; anything else fails the round trip.
        if ((err as Error).name === "ReplyError") return [[err as Error, undefined]];
        throw err;
      }
    }
    const pipeline = this.redis.pipeline();
    for (const { st, n, expire } of sent) {
      pipeline.incrby(st.key, n);
      if (expire) pipeline.pexpire(st.key, this.ttlMs);
    }
    const results = (await pipeline.exec()) ?? [];
    const out: [Error | null, unknown][] = [];
    let r = 0;
    for (const { expire } of sent) {
      out.push(results[r++] ?? [new Error("no reply"), undefined]);
      if (expire) r++;
    }
    return out;
  }

  /** Hands out the range an INCRBY returned, or random positions if the key's command failed. */
  private settle(st: KeyState, n: number, expired: boolean, err: Error | null, value: unknown): void {
    st.inFlight = false;
    this.inFlight.delete(st);
    if (err !== null || typeof value !== "number" || !Number.isSafeInteger(value)) {
      if (err !== null && err.name !== "ReplyError") {
        this.enterFallback(`Redis command failed: ${err.message}`);
        return;
      }
      // A reply error on this key only (e.g. someone stored a string there): random for its picks.
      this.opts.onError?.(`INCRBY ${st.key}`, err ?? new Error(`unexpected reply ${String(value)}`));
      this.answerRandomly(st);
      return;
    }
    this.stats.reservedPositions += n;
    if (value === n && !expired) {
      // The key did not exist (another node deleted it, or it expired): give the new one its TTL.
      this.redis.pexpire(st.key, this.ttlMs).catch((e: Error) => this.opts.onError?.(`PEXPIRE ${st.key}`, e));
    }
    st.ranges.push(value - n, value);
    const waiting = st.resolvers.length;
    let served = 0;
    while (served < waiting && st.ranges.length > 0) {
      st.resolvers[served++](take(st.ranges));
    }
    this.stats.countedPicks += served;
    if (served > 0) {
      st.resolvers.splice(0, served);
      st.cycles.splice(0, served);
    }
    // Picks that arrived during the round trip, or a lease running low: next round trip.
    if (st.resolvers.length > 0 || (this.lease > 0 && held(st.ranges) <= this.lowWater)) this.schedule(st);
  }

  // ---- states ----

  private enterFallback(reason: string): void {
    this.epoch++;
    this.releaseAll();
    this.setMode("fallback", reason);
  }

  /** Answers every waiting pick with a random position and forgets all local state. */
  private releaseAll(): void {
    const states = new Set<KeyState>([...this.keys.values(), ...this.inFlight, ...this.dirty]);
    this.keys = new Map();
    this.inFlight.clear();
    this.dirty = [];
    for (const st of states) {
      st.inFlight = false;
      st.queued = false;
      this.answerRandomly(st);
    }
  }

  private answerRandomly(st: KeyState): void {
    const resolvers = st.resolvers;
    const cycles = st.cycles;
    st.resolvers = [];
    st.cycles = [];
    st.ranges = [];
    this.stats.fallbackPicks += resolvers.length;
    for (let i = 0; i < resolvers.length; i++) resolvers[i](randomPosition(cycles[i], this.random));
  }

  private setMode(mode: SequenceState, reason: string): void {
    if (this.mode === mode) return;
    this.mode = mode;
    this.opts.onState?.(mode, reason);
    if (mode === "counting") for (const w of [...this.readyWaiters]) w(true);
  }

  /** PING while not counting; the first answer (re)starts counting from a clean slate. */
  private probe(): void {
    if (this.probing || (this.mode !== "fallback" && this.mode !== "connecting")) return;
    this.probing = true;
    withDeadline(this.redis.ping(), this.timeoutMs).then(
      () => {
        this.probing = false;
        if (this.mode !== "fallback" && this.mode !== "connecting") return;
        this.epoch++;
        this.keys = new Map();
        this.lastError = "";
        this.setMode("counting", "Redis answered");
      },
      (err: Error) => {
        this.probing = false;
        if (err instanceof Deadline && this.mode !== "closed") {
          // Connected but silent (a hung server): reconnect rather than pile probes on a dead socket.
          this.redis.disconnect(true);
        }
      },
    );
  }

  private scheduleSweep(): void {
    const interval = this.opts.sweepIntervalMs ?? 60_000;
    if (interval <= 0 || this.mode === "closed") return;
    // Jitter, so a fleet started together does not sweep together.
    this.sweepTimer = setTimeout(() => {
      this.sweep()
        .catch((err: Error) => this.opts.onError?.("sweeping sequence keys", err))
        .finally(() => this.scheduleSweep());
    }, interval * (0.75 + this.random() * 0.5));
    this.sweepTimer.unref();
  }
}

/** Takes the first held position. */
function take(ranges: number[]): number {
  const p = ranges[0]++;
  if (ranges[0] === ranges[1]) ranges.splice(0, 2);
  return p;
}

/** Positions held. */
function held(ranges: readonly number[]): number {
  let n = 0;
  for (let i = 0; i < ranges.length; i += 2) n += ranges[i + 1] - ranges[i];
  return n;
}

/**
 * Rejects with Deadline when `promise` has not settled `ms` after the call. When the timer fires,
 * the verdict waits one more turn of the event loop (setImmediate runs after the poll phase): a
 * reply that reached the socket while this process was busy is read first, so a GC pause or a burst
 * of work on this node is not mistaken for a slow Redis.
 */
function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      setImmediate(() => {
        if (settled) return;
        settled = true;
        reject(new Deadline(`no answer within ${ms} ms`));
      });
    }, ms);
    promise.then(
      (v) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

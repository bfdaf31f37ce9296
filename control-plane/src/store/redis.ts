/**
 * The configuration store on Redis, for control-plane replicas that share one configuration
 * (`gateway control-plane --store redis://...`). Every replica accepts writes; optimistic
 * concurrency is enforced inside Redis by one Lua script per commit, so of two replicas committing
 * on the same version exactly one wins and the other gets StoreConflictError (ConfigApi then
 * reloads and re-plans). Every replica follows the commit log, so a write on one reaches the data
 * planes of all.
 *
 * Keys (with the default prefix "gw:cfg:"; the prefix is wrapped in a hash tag so that every key
 * of one store lands in one Redis Cluster slot, which a multi-key Lua script requires):
 * - `{gw:cfg:}version`  string: the current version, decimal (absent means 0).
 * - `{gw:cfg:}res`      hash: field `kind/id` → JSON `{"revision":"12","data":"<opaque>"}`.
 * - `{gw:cfg:}log`      stream: one entry per commit, entry ID `<version>-0`, fields `v` (the
 *                       version) and `m` (the mutations as JSON); trimmed with `MAXLEN ~ N`.
 * Because entry IDs are versions, "everything after version v" is `XREAD ... STREAMS log v-0`.
 *
 * Consistency: the script compares the version key with the expected version and, only if they are
 * equal, appends to the log, applies the mutations and sets the new version, atomically (Redis runs
 * a script without interleaving). A stale write is refused, never lost, never half applied.
 *
 * Durability: commit() resolves once Redis has answered the script, i.e. applied it in memory and,
 * with `appendonly yes` + `appendfsync always`, written and fsync'ed it to the AOF first. With
 * `everysec`, a crash of the Redis host can lose about the last second of acknowledged commits.
 * Replication is asynchronous: `waitReplicas` makes commit() also wait (WAIT) for that many replicas.
 *
 * Failures: every command is bounded (`commandTimeoutMs`); while Redis is unreachable, commit() and
 * load() reject promptly with StoreUnavailableError and the control plane keeps serving its
 * in-memory state. ioredis reconnects by itself; the log follower then catches up from the last
 * version it delivered, or reloads the whole state (see {@link ConfigStore.onReload}) when the log
 * was trimmed past it.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from "ioredis";

import { parseRedisUrl, type RedisTarget } from "./redis-url.js";
import {
  StoreConflictError,
  StoreUnavailableError,
  resourceKey,
  type CommitEvent,
  type ConfigStore,
  type Mutation,
  type ResourceKind,
  type StoreState,
  type StoredResource,
} from "./store.js";
import { KINDS, toMutation } from "./mutation.js";

/** Tuning and reporting for a RedisStore. */
export interface RedisStoreOptions {
  /** Prefix of every key; wrapped in a hash tag unless it holds one. Default "gw:cfg:". */
  readonly prefix?: string;
  /** Commits the log keeps (approximately: `XADD MAXLEN ~`). Default 10,000. */
  readonly streamMaxLen?: number;
  /** Bound on every command (a commit included). Default 2,000 ms. */
  readonly commandTimeoutMs?: number;
  /** How long open() waits for Redis to be ready. Default 10,000 ms. */
  readonly connectTimeoutMs?: number;
  /** How long one XREAD of the log follower blocks. Default 5,000 ms. */
  readonly blockMs?: number;
  /** Ceiling of ioredis's reconnect backoff. Default 1,000 ms. */
  readonly maxReconnectDelayMs?: number;
  /** Replicas that must have acknowledged a commit (Redis WAIT) before it resolves. Default 0. */
  readonly waitReplicas?: number;
  /** How long a commit waits for `waitReplicas`; below `commandTimeoutMs`. Default 1,000 ms. */
  readonly waitTimeoutMs?: number;
  /**
   * Receives what no caller can: the connection lost, a reload after a gap in the log, Redis found
   * behind what this replica already saw, a subscriber that threw. Default: process.emitWarning.
   */
  readonly onWarning?: (warning: Error) => void;
  /** Told when the follower reaches Redis again after an outage. Default: nothing. */
  readonly onRecovered?: (message: string) => void;
}

/** The keys of one store. */
export interface RedisStoreKeys {
  readonly version: string;
  readonly resources: string;
  readonly log: string;
}

type Client = Redis | Cluster;
type LogEntry = [id: string, fields: string[]];

/** The commit script; see the file comment for the layout. Returns {"ok", v} or {"conflict", actual}. */
const COMMIT_SCRIPT = `
-- KEYS[1] version, KEYS[2] resources hash, KEYS[3] commit log stream
-- ARGV[1] expected version, ARGV[2] new version, ARGV[3] log MAXLEN, ARGV[4] mutations (JSON),
-- then one (op, field, value) triple per mutation.
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then
  return {'conflict', current}
end
-- Checked before the first write: a script that fails halfway keeps the writes it already made.
local function expect(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return 'key ' .. key .. ' holds a ' .. t .. ', not a ' .. want
  end
end
local bad = expect(KEYS[2], 'hash') or expect(KEYS[3], 'stream')
if bad then
  return redis.error_reply('ERR gateway store: ' .. bad)
end
-- XADD first: it is the only write that can still be refused (an ID not above the log's last one;
-- OOM, which Redis raises only before a script's first write), and then nothing was written.
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], ARGV[2] .. '-0', 'v', ARGV[2], 'm', ARGV[4])
for i = 5, #ARGV, 3 do
  if ARGV[i] == 'put' then
    redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i + 2])
  else
    redis.call('HDEL', KEYS[2], ARGV[i + 1])
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return {'ok', ARGV[2]}
`;

interface CommitCommand {
  gwCommit(versionKey: string, resourcesKey: string, logKey: string, ...args: string[]): Promise<unknown>;
}

const DEFAULT_PREFIX = "gw:cfg:";
const DEFAULT_STREAM_MAX_LEN = 10_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 2_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_BLOCK_MS = 5_000;
const DEFAULT_MAX_RECONNECT_DELAY_MS = 1_000;
const DEFAULT_WAIT_TIMEOUT_MS = 1_000;
/** Log entries one XREAD returns at most. */
const READ_BATCH = 1_000;
/** Our own bound on a command, over ioredis's commandTimeout (which a cluster may retry past). */
const BOUND_GRACE_MS = 500;

/** The keys for a prefix: the prefix itself is the hash tag, unless it already contains one. */
export function redisStoreKeys(prefix: string = DEFAULT_PREFIX): RedisStoreKeys {
  const tagged = /\{[^{}]+\}/.test(prefix) ? prefix : `{${prefix}}`;
  return { version: `${tagged}version`, resources: `${tagged}res`, log: `${tagged}log` };
}

/** A configuration store kept in Redis (or a Redis Cluster), shared by control-plane replicas. */
export class RedisStore implements ConfigStore {
  /**
   * Highest version this store has seen in Redis. A reply to a command sent after that (Redis
   * answers in order) with a lower version means Redis lost commits. Compared with its value at
   * send time only: replies on the two connections race, so a command sent earlier may answer
   * with an older version after the follower has delivered a newer one.
   */
  private highest: bigint;
  /** Version of the last read (open, load) before the follower started: where it starts. */
  private lastRead: bigint;
  /** Last version the follower delivered. */
  private cursor = 0n;
  private following: Promise<void> | undefined;
  private readonly listeners = new Set<{ readonly listener: (event: CommitEvent) => void }>();
  private readonly reloadListeners = new Set<{ readonly listener: (state: StoreState) => void }>();
  private readonly pending = new Set<Promise<unknown>>();
  private readonly stop = new AbortController();
  private closing: Promise<void> | undefined;
  /** Set once Redis was found behind `highest`: writes are refused and following stops. */
  private regressed: StoreUnavailableError | undefined;

  private constructor(
    readonly target: RedisTarget,
    readonly keys: RedisStoreKeys,
    private readonly client: Client,
    /** Dedicated to the blocking XREAD of the follower. */
    private readonly reader: Client,
    private readonly settings: Settings,
    version: bigint,
  ) {
    this.highest = version;
    this.lastRead = version;
  }

  /**
   * Connects to Redis (`redis://`, `rediss://`, `redis+cluster://`, see redis-url.ts) and waits
   * until it is ready. Rejects with StoreUnavailableError if it is not within `connectTimeoutMs`.
   */
  static async open(url: string, opts: RedisStoreOptions = {}): Promise<RedisStore> {
    const target = parseRedisUrl(url);
    const settings = toSettings(opts);
    const keys = redisStoreKeys(opts.prefix ?? DEFAULT_PREFIX);
    const client = createClient(target, settings, "commands");
    const reader = createClient(target, settings, "follower");
    try {
      await Promise.all([waitReady(client, target, settings), waitReady(reader, target, settings)]);
      client.defineCommand("gwCommit", { numberOfKeys: 3, lua: COMMIT_SCRIPT });
      const version = parseVersion(
        await bounded(client.get(keys.version), settings.commandTimeoutMs, `reading ${keys.version}`),
        `${keys.version}`,
      );
      return new RedisStore(target, keys, client, reader, settings, version);
    } catch (error) {
      client.disconnect();
      reader.disconnect();
      if (error instanceof StoreUnavailableError) throw error;
      throw new StoreUnavailableError(`redis store ${target.display}: ${message(error)}`, { cause: error });
    }
  }

  /** Reads version and resources in one MULTI, so they are consistent. */
  async load(): Promise<StoreState> {
    this.assertOpen();
    const floor = this.highest;
    let replies: [error: Error | null, result: unknown][] | null;
    try {
      replies = await bounded(
        this.client.multi().get(this.keys.version).hgetall(this.keys.resources).exec(),
        this.settings.commandTimeoutMs,
        "loading the configuration",
      );
    } catch (error) {
      const why = describeRedisError(error, this.settings.commandTimeoutMs);
      throw new StoreUnavailableError(`redis store ${this.target.display}: cannot load the configuration: ${why}`, { cause: error });
    }
    if (replies === null) throw new StoreUnavailableError(`redis store ${this.target.display}: the load transaction was aborted`);
    const [[versionError, rawVersion], [resourcesError, rawResources]] = replies;
    const failed = versionError ?? resourcesError;
    if (failed) {
      throw new StoreUnavailableError(`redis store ${this.target.display}: cannot load the configuration: ${failed.message}`, {
        cause: failed,
      });
    }
    const version = parseVersion(rawVersion, this.keys.version);
    const resources = new Map<string, StoredResource>();
    for (const [field, value] of Object.entries((rawResources ?? {}) as Record<string, string>)) {
      const resource = parseResource(field, value, version, this.keys.resources);
      resources.set(field, resource);
    }
    if (version < floor) this.markRegressed(version, floor);
    this.seen(version);
    if (this.following === undefined) this.lastRead = version;
    return { version, resources };
  }

  commit(expectedVersion: bigint, mutations: readonly Mutation[]): Promise<bigint> {
    let owned: readonly Mutation[];
    try {
      this.assertOpen();
      if (typeof expectedVersion !== "bigint") {
        throw new TypeError(`expectedVersion: must be a bigint, got ${typeof expectedVersion}`);
      }
      owned = Object.freeze(Array.from(mutations, (m, i) => toMutation(m, `mutations[${i}]`)));
    } catch (error) {
      return Promise.reject(error);
    }
    const result = this.commitNow(expectedVersion, owned);
    this.pending.add(result);
    const forget = () => this.pending.delete(result);
    result.then(forget, forget);
    return result;
  }

  /**
   * Delivers, in version order and without gaps, every commit after the version this store last
   * read (open() or load()) before the first subscription, so a caller that loads and then
   * subscribes misses nothing in between; later subscribers receive commits from the follower's
   * position on. Commits of this process arrive here too, read back from the log.
   */
  subscribe(listener: (event: CommitEvent) => void): () => void {
    this.assertOpen();
    const entry = { listener };
    this.listeners.add(entry);
    this.startFollowing();
    return () => {
      this.listeners.delete(entry);
    };
  }

  onReload(listener: (state: StoreState) => void): () => void {
    this.assertOpen();
    const entry = { listener };
    this.reloadListeners.add(entry);
    this.startFollowing();
    return () => {
      this.reloadListeners.delete(entry);
    };
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private assertOpen(): void {
    if (this.closing) throw new StoreUnavailableError(`redis store ${this.target.display} is closed`);
  }

  private seen(version: bigint): void {
    if (version > this.highest) this.highest = version;
  }

  private async commitNow(expected: bigint, mutations: readonly Mutation[]): Promise<bigint> {
    if (this.regressed) throw this.regressed;
    const floor = this.highest;
    const version = expected + 1n;
    const args = [expected.toString(), version.toString(), String(this.settings.streamMaxLen), JSON.stringify(mutations)];
    for (const m of mutations) {
      const field = resourceKey(m.kind, m.id);
      if (m.op === "put") args.push("put", field, JSON.stringify({ revision: version.toString(), data: m.data }));
      else args.push("delete", field, "");
    }

    let reply: unknown;
    let replicas: number | undefined;
    try {
      const { waitReplicas, waitTimeoutMs } = this.settings;
      if (waitReplicas === 0) {
        reply = await bounded(
          (this.client as unknown as CommitCommand).gwCommit(this.keys.version, this.keys.resources, this.keys.log, ...args),
          this.settings.commandTimeoutMs,
          `the commit of version ${version}`,
        );
      } else {
        // One pipeline, so WAIT runs on the connection (and cluster node) that ran the script.
        const pipeline = this.client.pipeline();
        (pipeline as unknown as CommitCommand).gwCommit(this.keys.version, this.keys.resources, this.keys.log, ...args);
        pipeline.wait(waitReplicas, waitTimeoutMs);
        const replies = await bounded(pipeline.exec(), this.settings.commandTimeoutMs, `the commit of version ${version}`);
        const [[commitError, commitReply], [waitError, waitReply]] = replies ?? [[new Error("pipeline aborted"), null], [null, null]];
        if (commitError) throw commitError;
        reply = commitReply;
        if (waitError) throw waitError;
        replicas = Number(waitReply);
      }
    } catch (error) {
      throw this.commitFailure(version, error);
    }

    const [status, value] = Array.isArray(reply) ? (reply as unknown[]) : [];
    if (status === "conflict") {
      const actual = parseVersion(value, this.keys.version);
      if (actual < floor) throw this.markRegressed(actual, floor);
      this.seen(actual);
      throw new StoreConflictError(expected, actual);
    }
    if (status !== "ok" || value !== version.toString()) {
      throw new StoreUnavailableError(
        `redis store ${this.target.display}: unexpected answer to the commit of version ${version}: ${JSON.stringify(reply)}`,
      );
    }
    this.seen(version);
    if (replicas !== undefined && replicas < this.settings.waitReplicas) {
      throw new StoreUnavailableError(
        `redis store ${this.target.display}: version ${version} was committed on the Redis primary, but only ${replicas} of ` +
          `${this.settings.waitReplicas} replicas acknowledged it within ${this.settings.waitTimeoutMs} ms; ` +
          "it is applied, but would be lost if the primary failed before they catch up",
      );
    }
    return version;
  }

  /** Says whether a failed commit was never sent (nothing written) or its outcome is unknown. */
  private commitFailure(version: bigint, error: unknown): StoreUnavailableError {
    const text = describeRedisError(error, this.settings.commandTimeoutMs);
    const where = `redis store ${this.target.display}: commit of version ${version}`;
    if (neverSent(error)) {
      return new StoreUnavailableError(`${where} not sent: ${text}; nothing was written`, { cause: error });
    }
    if (isReplyError(error)) {
      return new StoreUnavailableError(`${where} refused by Redis: ${text}; nothing was written`, { cause: error });
    }
    return new StoreUnavailableError(
      `${where} failed: ${text}; it may or may not have been applied (if it was, it is delivered like any other commit)`,
      { cause: error },
    );
  }

  private markRegressed(actual: bigint, seen: bigint): StoreUnavailableError {
    this.regressed ??= new StoreUnavailableError(
      `redis store ${this.target.display}: Redis is at version ${actual}, behind version ${seen} that this replica ` +
        "already saw: acknowledged commits were lost (Redis restarted without persistence, failed over to a lagging " +
        "replica, or was flushed). This replica refuses writes and stops following; restore Redis from a backup, or " +
        "restart every control-plane replica to adopt what Redis holds now",
    );
    this.settings.onWarning(this.regressed);
    return this.regressed;
  }

  // ---- the log follower ----

  private startFollowing(): void {
    if (this.following !== undefined) return;
    this.cursor = this.lastRead;
    this.following = this.follow();
  }

  /**
   * Reads the log with a blocking XREAD from the last delivered version. On any failure (Redis
   * down, connection lost) it backs off and retries; once a probe succeeds again it says so and
   * resumes from where it was, so nothing is missed or delivered twice.
   */
  private async follow(): Promise<void> {
    let failure: unknown;
    let failures = 0;
    while (!this.closing && this.regressed === undefined) {
      try {
        if (failure !== undefined) {
          // A probe before blocking again: tells "back" at once, and notices a Redis that came
          // back without the commits it had (restarted without persistence).
          const floor = this.highest;
          const version = parseVersion(
            await bounded(this.reader.get(this.keys.version), this.settings.commandTimeoutMs, `reading ${this.keys.version}`),
            this.keys.version,
          );
          if (version < floor) {
            this.markRegressed(version, floor);
            break;
          }
          this.settings.onRecovered(`redis store ${this.target.display}: reachable again; following commits after version ${this.cursor}`);
          failure = undefined;
          failures = 0;
        }
        const reply = (await this.reader.xread(
          "COUNT",
          READ_BATCH,
          "BLOCK",
          this.settings.blockMs,
          "STREAMS",
          this.keys.log,
          `${this.cursor}-0`,
        )) as [key: string, entries: LogEntry[]][] | null;
        if (reply !== null) {
          for (const [, entries] of reply) await this.deliver(entries);
        }
      } catch (error) {
        if (this.closing) break;
        if (failure === undefined) {
          this.settings.onWarning(
            new StoreUnavailableError(
              `redis store ${this.target.display}: lost Redis (${describeRedisError(error, this.settings.commandTimeoutMs)}); ` +
                "serving the configuration in memory, commits fail until it is back",
              { cause: error },
            ),
          );
        }
        failure = error;
        failures++;
        const ceiling = Math.min(this.settings.maxReconnectDelayMs, 50 * 2 ** Math.min(failures, 10));
        await sleep(ceiling / 2 + (Math.random() * ceiling) / 2, this.stop.signal);
      }
    }
  }

  private async deliver(entries: readonly LogEntry[]): Promise<void> {
    for (const [id, fields] of entries) {
      if (this.closing || this.regressed) return;
      const event = parseEntry(id, fields, this.keys.log);
      if (event instanceof Error) {
        // Unreadable (foreign or damaged): the hash still holds the truth, so reload from it.
        await this.reload(event.message);
        return;
      }
      if (event.version <= this.cursor) continue;
      if (event.version !== this.cursor + 1n) {
        await this.reload(`the commit log was trimmed past version ${this.cursor + 1n} (its next entry is version ${event.version})`);
        return;
      }
      this.cursor = event.version;
      this.seen(event.version);
      for (const entry of [...this.listeners]) {
        try {
          entry.listener(event);
        } catch (error) {
          const where = `redis store ${this.target.display}: subscriber threw on version ${event.version}`;
          this.settings.onWarning(new Error(where, { cause: error }));
        }
      }
    }
  }

  /** Replaces what subscribers hold by the whole state, when the log cannot say what they missed. */
  private async reload(reason: string): Promise<void> {
    const state = await this.load();
    if (state.version < this.cursor) {
      this.markRegressed(state.version, this.cursor);
      return;
    }
    if (state.version === this.cursor) return;
    this.settings.onWarning(
      new Error(`redis store ${this.target.display}: ${reason}; reloaded the whole configuration at version ${state.version}`),
    );
    this.cursor = state.version;
    for (const entry of [...this.reloadListeners]) {
      try {
        entry.listener(state);
      } catch (error) {
        const where = `redis store ${this.target.display}: reload subscriber threw on version ${state.version}`;
        this.settings.onWarning(new Error(where, { cause: error }));
      }
    }
  }

  private async shutdown(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    this.stop.abort();
    // Rejects the blocked XREAD at once; the follower sees `closing` and ends.
    this.reader.disconnect();
    await this.following?.catch(() => undefined);
    try {
      await bounded(this.client.quit(), this.settings.commandTimeoutMs, "QUIT");
    } catch {
      this.client.disconnect();
    }
    await Promise.all([ended(this.client), ended(this.reader)]);
  }
}

// ---- connections ----

interface Settings {
  readonly streamMaxLen: number;
  readonly commandTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly blockMs: number;
  readonly maxReconnectDelayMs: number;
  readonly waitReplicas: number;
  readonly waitTimeoutMs: number;
  readonly onWarning: (warning: Error) => void;
  readonly onRecovered: (message: string) => void;
}

function toSettings(opts: RedisStoreOptions): Settings {
  const settings: Settings = {
    streamMaxLen: positiveInteger(opts.streamMaxLen, DEFAULT_STREAM_MAX_LEN, "streamMaxLen"),
    commandTimeoutMs: positiveInteger(opts.commandTimeoutMs, DEFAULT_COMMAND_TIMEOUT_MS, "commandTimeoutMs"),
    connectTimeoutMs: positiveInteger(opts.connectTimeoutMs, DEFAULT_CONNECT_TIMEOUT_MS, "connectTimeoutMs"),
    blockMs: positiveInteger(opts.blockMs, DEFAULT_BLOCK_MS, "blockMs"),
    maxReconnectDelayMs: positiveInteger(opts.maxReconnectDelayMs, DEFAULT_MAX_RECONNECT_DELAY_MS, "maxReconnectDelayMs"),
    waitReplicas: opts.waitReplicas === 0 ? 0 : positiveInteger(opts.waitReplicas, 0, "waitReplicas"),
    waitTimeoutMs: positiveInteger(opts.waitTimeoutMs, DEFAULT_WAIT_TIMEOUT_MS, "waitTimeoutMs"),
    onWarning: opts.onWarning ?? ((warning: Error) => process.emitWarning(warning)),
    onRecovered: opts.onRecovered ?? (() => undefined),
  };
  if (settings.waitReplicas > 0 && settings.waitTimeoutMs >= settings.commandTimeoutMs) {
    throw new RangeError(
      `RedisStoreOptions.waitTimeoutMs: must be below commandTimeoutMs (${settings.commandTimeoutMs}), got ${settings.waitTimeoutMs}`,
    );
  }
  return settings;
}

/**
 * A connection that never queues: while Redis is unreachable a command fails at once (no offline
 * queue), a command in flight when the connection drops fails at once (no retry, no resend after
 * reconnecting: a commit is never replayed behind its caller's back), and a silent peer is detected
 * by the socket timeout. ioredis keeps reconnecting in the background.
 */
function createClient(target: RedisTarget, settings: Settings, role: "commands" | "follower"): Client {
  const retry = (times: number) => Math.min(50 * 2 ** Math.min(times, 10), settings.maxReconnectDelayMs);
  const common = {
    username: target.username,
    password: target.password,
    db: target.db,
    tls: target.tls ? {} : undefined,
    connectionName: `gateway-control-plane-${role}`,
    connectTimeout: settings.connectTimeoutMs,
    // The follower blocks in XREAD for blockMs: only the socket timeout bounds it.
    commandTimeout: role === "commands" ? settings.commandTimeoutMs : undefined,
    socketTimeout: settings.commandTimeoutMs + (role === "follower" ? settings.blockMs : settings.waitTimeoutMs),
    keepAlive: 10_000,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
  } satisfies RedisOptions;
  let client: Client;
  if (target.cluster) {
    const clusterOptions: ClusterOptions = {
      enableOfflineQueue: false,
      clusterRetryStrategy: retry,
      slotsRefreshTimeout: settings.commandTimeoutMs,
      redisOptions: common,
    };
    client = new Cluster(target.nodes.map((n) => ({ host: n.host, port: n.port })), clusterOptions);
  } else {
    client = new Redis({ ...common, host: target.nodes[0].host, port: target.nodes[0].port, enableOfflineQueue: false, retryStrategy: retry });
  }
  // Errors are reported through the commands that fail; without a listener ioredis prints them.
  client.on("error", () => undefined);
  return client;
}

/** Resolves when the client is ready; rejects after connectTimeoutMs with the last error seen. */
function waitReady(client: Client, target: RedisTarget, settings: Settings): Promise<void> {
  if (client.status === "ready") return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    let last = "";
    const onError = (error: Error) => {
      last = error.message;
    };
    const done = () => {
      clearTimeout(timer);
      client.off("ready", onReady);
      client.off("error", onError);
    };
    const onReady = () => {
      done();
      resolve();
    };
    const timer = setTimeout(() => {
      done();
      reject(
        new StoreUnavailableError(
          `redis store ${target.display}: not ready within ${settings.connectTimeoutMs} ms${last ? ` (${last})` : ""}`,
        ),
      );
    }, settings.connectTimeoutMs);
    client.on("ready", onReady);
    client.on("error", onError);
  });
}

/** Resolves once a disconnected client has closed its sockets (bounded: it is only tidiness). */
function ended(client: Client): Promise<void> {
  if (client.status === "end") return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1_000);
    client.once("end", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Rejects if `promise` has not settled shortly after ioredis's own command timeout. */
function bounded<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  const ms = timeoutMs + BOUND_GRACE_MS;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`Redis did not answer ${what} within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

// ---- parsing what Redis holds ----

function parseVersion(value: unknown, key: string): bigint {
  if (value === null || value === undefined) return 0n;
  if (typeof value !== "string" || !/^(0|[1-9][0-9]*)$/.test(value)) {
    throw new Error(`redis store: ${key} holds ${JSON.stringify(value)}, not a version`);
  }
  return BigInt(value);
}

function parseResource(field: string, value: string, version: bigint, key: string): StoredResource {
  const where = `redis store: ${key} field ${JSON.stringify(field)}`;
  const slash = field.indexOf("/");
  const kind = field.slice(0, slash);
  if (slash <= 0 || !Object.hasOwn(KINDS, kind)) throw new Error(`${where}: not a "kind/id" of a known kind`);
  let body: unknown;
  try {
    body = JSON.parse(value);
  } catch (error) {
    throw new Error(`${where}: value is not JSON (${message(error)})`);
  }
  const { revision, data } = (body ?? {}) as Record<string, unknown>;
  if (typeof data !== "string") throw new Error(`${where}: data: not a string`);
  const rev = parseVersion(revision, `${key} field ${field} revision`);
  if (rev < 1n || rev > version) throw new Error(`${where}: revision ${rev} outside 1..${version}`);
  return Object.freeze({ kind: kind as ResourceKind, id: field.slice(slash + 1), revision: rev, data });
}

/** A log entry as a commit event, or an Error saying why it cannot be one. */
function parseEntry(id: string, fields: readonly string[], key: string): CommitEvent | Error {
  const where = `entry ${id} of ${key}`;
  const values = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) values.set(fields[i], fields[i + 1]);
  const v = values.get("v");
  if (v === undefined || !/^[1-9][0-9]*$/.test(v) || id !== `${v}-0`) return new Error(`${where} has no version matching its ID`);
  let raw: unknown;
  try {
    raw = JSON.parse(values.get("m") ?? "");
  } catch (error) {
    return new Error(`${where}: mutations are not JSON (${message(error)})`);
  }
  if (!Array.isArray(raw)) return new Error(`${where}: mutations are not a list`);
  try {
    const mutations = Object.freeze(raw.map((m: unknown, i: number) => toMutation(m, `m[${i}]`)));
    return Object.freeze({ version: BigInt(v), mutations });
  } catch (error) {
    return new Error(`${where}: ${message(error)}`);
  }
}


function positiveInteger(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`RedisStoreOptions.${name}: must be a positive integer, got ${value}`);
  }
  return value;
}

/** Whether ioredis refused a command without sending it (not connected, or closed by us). */
function neverSent(error: unknown): boolean {
  return /enableOfflineQueue|^Connection is closed/.test(message(error));
}

/** ioredis's errors in an operator's words (its own name the options that produced them). */
function describeRedisError(error: unknown, commandTimeoutMs: number): string {
  const text = message(error);
  if (error instanceof Error && error.name === "MaxRetriesPerRequestError") return "the connection to Redis was lost";
  if (/enableOfflineQueue/.test(text)) return "not connected to Redis";
  if (/^Connection is closed/.test(text)) return "the connection to Redis is closed";
  if (text === "Command timed out") return `Redis did not answer within ${commandTimeoutMs} ms`;
  return text;
}

function isReplyError(error: unknown): boolean {
  return error instanceof Error && error.name === "ReplyError";
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

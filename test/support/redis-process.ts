/**
 * A private redis-server for tests of the Redis configuration store: started on a free 127.0.0.1
 * port in its own temp dir, with or without AOF persistence, optionally as a one-node Redis Cluster
 * that owns every slot. It is tracked, signalled, killed and restarted by PID only (on the same
 * port and dir, so an AOF survives the restart); the machine's own Redis on 6379 is never used.
 *
 * test/unit/data-plane/counters/redis-server.ts is the counters' variant (no persistence, no
 * cluster); this one exists because the store's tests need both.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { Redis } from "ioredis";
import { waitFor } from "./wait.js";

export const REDIS_SERVER_BIN = "/usr/bin/redis-server";

/** How a server keeps its data: not at all, or in an AOF fsync'ed on every write / every second. */
export type RedisPersistence = "none" | "aof-always" | "aof-everysec";

/** Options of {@link RedisProcess.start}. */
export interface RedisProcessOptions {
  readonly persistence?: RedisPersistence;
  /** A one-node Redis Cluster owning all 16384 slots. */
  readonly cluster?: boolean;
}

const running = new Set<RedisProcess>();
// Last resort: a worker that exits never leaves a redis-server behind.
process.once("exit", () => {
  for (const r of running) r.signal("SIGKILL");
});

/** A port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** One redis-server, and the processes that replace it on the same port after a kill. */
export class RedisProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private output: string[] = [];
  private readonly clients = new Set<Redis>();

  private constructor(
    readonly port: number,
    readonly dir: string,
    readonly opts: Required<RedisProcessOptions>,
  ) {}

  /** Starts a server on a free port and waits until it accepts commands (and the cluster is ok). */
  static async start(opts: RedisProcessOptions = {}): Promise<RedisProcess> {
    const dir = mkdtempSync(path.join(os.tmpdir(), "gateway-redis-store-"));
    const full = { persistence: opts.persistence ?? "none", cluster: opts.cluster ?? false };
    for (let attempt = 0; ; attempt++) {
      const server = new RedisProcess(await freePort(), dir, full);
      try {
        await server.spawn();
        running.add(server);
        if (full.cluster) await server.assignAllSlots();
        return server;
      } catch (err) {
        // Another process may have taken the free port between the probe and the bind.
        await server.kill();
        if (attempt >= 2) {
          rmSync(dir, { recursive: true, force: true });
          throw err;
        }
      }
    }
  }

  /** redis://127.0.0.1:PORT, or redis+cluster://127.0.0.1:PORT for a cluster. */
  get url(): string {
    return `${this.opts.cluster ? "redis+cluster" : "redis"}://127.0.0.1:${this.port}`;
  }

  /** PID of the current process; undefined while none runs. */
  get pid(): number | undefined {
    const c = this.child;
    return c !== undefined && c.exitCode === null && c.signalCode === null ? c.pid : undefined;
  }

  private async spawn(): Promise<void> {
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--dir", this.dir, "--daemonize", "no", "--logfile", ""];
    if (this.opts.persistence === "none") args.push("--appendonly", "no");
    else args.push("--appendonly", "yes", "--appendfsync", this.opts.persistence === "aof-always" ? "always" : "everysec");
    // A lone node does not know its own address (it learns it from peers): announce it, or
    // CLUSTER SLOTS names no host and cluster clients find no node for any slot.
    if (this.opts.cluster) args.push("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-announce-ip", "127.0.0.1");
    const child = spawn(REDIS_SERVER_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
    if (child.pid === undefined) throw new Error("could not start redis-server");
    this.child = child;
    this.output = [];
    this.exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start on ${this.port}:\n${this.output.join("\n")}`)), 15_000);
      readline.createInterface({ input: child.stdout! }).on("line", (line) => {
        this.output.push(line);
        if (line.includes("Ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.stderr!.on("data", (c: Buffer) => this.output.push(c.toString()));
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited (${signal ?? code}) before it was ready:\n${this.output.join("\n")}`));
      });
    });
  }

  private async assignAllSlots(): Promise<void> {
    const c = this.client();
    await c.call("CLUSTER", "ADDSLOTSRANGE", "0", "16383");
    await this.waitClusterOk();
  }

  private async waitClusterOk(): Promise<void> {
    const c = this.client();
    await waitFor(async () => /cluster_state:ok/.test(String(await c.call("CLUSTER", "INFO"))), { what: `cluster on ${this.port} to be ok` });
  }

  /** Sends a signal by PID to the running server, if any. */
  signal(sig: NodeJS.Signals): void {
    const pid = this.pid;
    if (pid === undefined) return;
    try {
      process.kill(pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
    }
  }

  /** A crash: SIGKILL by PID; resolves once the process is gone. */
  async kill(): Promise<void> {
    if (this.pid === undefined) return;
    this.signal("SIGCONT");
    this.signal("SIGKILL");
    await this.exited;
  }

  /** A hang: SIGSTOP (the socket stays open, nothing answers). */
  freeze(): void {
    this.signal("SIGSTOP");
  }

  /** Ends a {@link freeze}. */
  thaw(): void {
    this.signal("SIGCONT");
  }

  /** Starts a new server on the same port and dir (after {@link kill}): it replays its AOF, if any. */
  async restart(): Promise<void> {
    if (this.pid !== undefined) throw new Error("restart: kill the running redis-server first");
    await this.spawn();
    if (this.opts.cluster) await this.waitClusterOk();
  }

  /** An inspection client (plain, not cluster-aware: the one node owns every slot); closed by {@link stop}. */
  client(): Redis {
    const c = new Redis({ host: "127.0.0.1", port: this.port, maxRetriesPerRequest: 1 });
    c.on("error", () => {
      // Expected while the server is killed; commands fail and tests see that.
    });
    this.clients.add(c);
    return c;
  }

  /** Closes the clients, stops the server by PID (SIGTERM, then SIGKILL) and removes its dir. */
  async stop(): Promise<void> {
    for (const c of this.clients) c.disconnect();
    this.clients.clear();
    if (this.pid !== undefined) {
      this.thaw();
      this.signal("SIGTERM");
      const timer = setTimeout(() => this.signal("SIGKILL"), 5_000);
      await this.exited;
      clearTimeout(timer);
    }
    running.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Stops every server started here (for afterAll). */
export async function stopAllRedis(): Promise<void> {
  await Promise.all([...running].map((r) => r.stop()));
}

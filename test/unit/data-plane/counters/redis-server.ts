/**
 * A real, private redis-server for the counter tests: started on a free 127.0.0.1 port with no
 * persistence (`--save "" --appendonly no`), in its own temp dir, tracked by PID, killed or stopped
 * by PID only, and restartable on the same port (an empty server, as after a crash). The machine's
 * own Redis on 6379 is never used.
 *
 * The e2e tests (test/e2e/redis-*.test.ts) use it too.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { once } from "node:events";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { Redis } from "ioredis";

export const REDIS_SERVER_BIN = "/usr/bin/redis-server";

const running = new Set<ChildProcess>();
// Last resort: a worker that exits never leaves a redis-server behind.
process.once("exit", () => {
  for (const c of running) if (c.pid !== undefined && c.exitCode === null) process.kill(c.pid, "SIGKILL");
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

/** One redis-server process (and the ones that replace it on the same port). */
export class RedisServer {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private output: string[] = [];
  private readonly clients = new Set<Redis>();

  private constructor(
    readonly port: number,
    private readonly dir: string,
  ) {}

  /** Starts a server on a free port and waits until it accepts connections. */
  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freePort(), mkdtempSync(path.join(os.tmpdir(), "gateway-redis-")));
    await server.spawn();
    return server;
  }

  /** redis://127.0.0.1:PORT */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** PID of the current process (undefined while stopped). */
  get pid(): number | undefined {
    const c = this.child;
    return c !== undefined && c.exitCode === null && c.signalCode === null ? c.pid : undefined;
  }

  private async spawn(): Promise<void> {
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.dir, "--daemonize", "no", "--logfile", ""];
    const child = spawn(REDIS_SERVER_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
    if (child.pid === undefined) throw new Error("could not start redis-server");
    this.child = child;
    running.add(child);
    this.output = [];
    this.exited = new Promise<void>((resolve) => child.once("exit", () => {
      running.delete(child);
      resolve();
    }));
    const ready = new Promise<void>((resolve, reject) => {
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
    await ready;
  }

  /** A crash: SIGKILL by PID, resolves once the process is gone. */
  async kill(): Promise<void> {
    const child = this.child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    process.kill(child.pid!, "SIGKILL");
    await this.exited;
  }

  /** A hang: SIGSTOP (the socket stays open, nothing answers). */
  freeze(): void {
    if (this.pid !== undefined) process.kill(this.pid, "SIGSTOP");
  }

  /** Ends a {@link freeze}. */
  thaw(): void {
    if (this.pid !== undefined) process.kill(this.pid, "SIGCONT");
  }

  /** Starts a new, empty server on the same port (after {@link kill}). */
  async restart(): Promise<void> {
    if (this.pid !== undefined) throw new Error("restart: kill the running redis-server first");
    await this.spawn();
  }

  /** An inspection client, closed by {@link stop}. */
  client(): Redis {
    const c = new Redis(this.url, { lazyConnect: false, maxRetriesPerRequest: 1 });
    c.on("error", () => {
      // Expected while the server is killed; commands fail and tests see that.
    });
    this.clients.add(c);
    return c;
  }

  /** Number of INCRBY commands the server executed since the last CONFIG RESETSTAT. */
  static async incrbyCalls(client: Redis): Promise<number> {
    const info = await client.info("commandstats");
    const m = /cmdstat_incrby:calls=(\d+)/.exec(info);
    return m === null ? 0 : Number(m[1]);
  }

  /** Closes the clients, stops the server by PID (SIGTERM, then SIGKILL) and removes its dir. */
  async stop(): Promise<void> {
    for (const c of this.clients) c.disconnect();
    this.clients.clear();
    const child = this.child;
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      this.thaw();
      process.kill(child.pid!, "SIGTERM");
      const timer = setTimeout(() => child.exitCode === null && process.kill(child.pid!, "SIGKILL"), 5_000);
      await this.exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

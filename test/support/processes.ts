/**
 * Real gateway processes for end-to-end tests: the built CLI (`npm run build` first) started with
 * `node dist/control-plane/src/cli/gateway.js <command>` on 127.0.0.1 port 0.
 *
 * Both planes log one JSON object per line (pino) on stdout. Every line is kept: the JSON ones are
 * parsed into {@link LogRecord}s, which tests wait on ({@link GatewayProcess.waitForLog}) to learn
 * the bound URL and to follow events (applied snapshot, connected, refused snapshot); all of it is
 * quoted in failure messages.
 *
 * Teardown is part of the test: {@link GatewayProcess.stop} sends SIGTERM by PID and fails unless
 * the process exits with code 0 within {@link DEFAULT_STOP_TIMEOUT_MS}, which is shorter than the
 * control plane's own force-close grace (5 s), so a connection, stream or timer left open fails the
 * test instead of being cut silently. Anything still running when the test worker exits is
 * SIGKILLed by PID; nothing is ever killed by name.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { withTimeout } from "./wait.js";

/** Root of the repository (the children's working directory). */
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** The built CLI. */
export const GATEWAY_BIN = path.join(REPO_ROOT, "dist/control-plane/src/cli/gateway.js");

/**
 * How long a process may take to exit after SIGTERM. A clean shutdown takes tens of milliseconds;
 * the cap is generous for a loaded 2-core machine but below the control plane's 5 s force-close
 * grace, so shutdown that only completes by force counts as a failure.
 */
export const DEFAULT_STOP_TIMEOUT_MS = 4_000;

/** How long to wait for a process to announce that it listens. */
const START_TIMEOUT_MS = 20_000;

/** One parsed JSON log line. `msg` is pino's message; the other fields depend on the event. */
export type LogRecord = { readonly msg?: string; readonly level?: number; readonly [field: string]: unknown };

/** How a process ended. */
export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Options of {@link GatewayProcess.waitForLog}. */
export interface WaitForLogOptions {
  /** Give up after this long (default 15 s); the process's output is quoted in the error. */
  readonly timeoutMs?: number;
  /** Only consider records from this index on (see {@link GatewayProcess.mark}); default 0 (all). */
  readonly since?: number;
  /** Names the awaited event in errors. */
  readonly what?: string;
}

/** Processes started and not yet exited, in start order. */
const running = new Set<GatewayProcess>();

// Last resort: a worker that exits (or crashes) never leaves gateway processes behind.
process.once("exit", () => {
  for (const p of running) p.signal("SIGKILL");
});

/** Environment for children: ours without GATEWAY_* (so a developer's shell cannot change a test), plus `extra`. */
function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("GATEWAY_")) env[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

function describeExit(s: ExitStatus): string {
  return s.signal !== null ? `signal ${s.signal}` : `exit code ${s.code}`;
}

/**
 * A child process running the gateway CLI, with its output kept and parsed. Construct through
 * {@link spawnGateway} (or the start helpers below) so the safety net knows about it.
 */
export class GatewayProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Parsed JSON lines of stdout, in order. */
  readonly records: LogRecord[] = [];
  /** Every stdout line, JSON or not (the all-in-one's generated admin key is plain text). */
  readonly stdoutLines: string[] = [];
  private stderrText = "";
  private status: ExitStatus | undefined;
  /** Resolves when the process has exited and its output is fully read. */
  readonly exited: Promise<ExitStatus>;
  private readonly waiters = new Set<() => void>();
  private killedByTest = false;

  constructor(
    /** Label for messages, e.g. "control-plane" or "dp-1". */
    readonly name: string,
    readonly args: readonly string[],
    env: Record<string, string | undefined> = {},
  ) {
    if (!existsSync(GATEWAY_BIN)) throw new Error(`${GATEWAY_BIN} is missing: run "npm run build" before the e2e tests`);
    this.child = spawn(process.execPath, [GATEWAY_BIN, ...args], { cwd: REPO_ROOT, env: childEnv(env), stdio: ["ignore", "pipe", "pipe"] });
    if (this.child.pid === undefined) throw new Error(`could not start ${name}`);
    this.pid = this.child.pid;
    running.add(this);
    readline.createInterface({ input: this.child.stdout! }).on("line", (line) => {
      this.stdoutLines.push(line);
      if (line.startsWith("{")) {
        try {
          this.records.push(JSON.parse(line) as LogRecord);
        } catch {
          // not a log record; kept in stdoutLines
        }
      }
      this.notify();
    });
    this.child.stderr!.setEncoding("utf8");
    this.child.stderr!.on("data", (chunk: string) => {
      this.stderrText += chunk;
    });
    this.exited = new Promise<ExitStatus>((resolve) => {
      // "close" (not "exit"): all output has been read by then.
      this.child.once("close", (code, signal) => {
        this.status = { code, signal };
        running.delete(this);
        this.notify();
        resolve(this.status);
      });
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** How it ended, or undefined while it runs. */
  get exitStatus(): ExitStatus | undefined {
    return this.status;
  }

  /** Everything written to stderr so far. */
  get stderr(): string {
    return this.stderrText;
  }

  /** Everything written to stdout so far. */
  get stdout(): string {
    return this.stdoutLines.map((l) => `${l}\n`).join("");
  }

  /** Index of the next record, to wait only for events after now: `waitForLog(p, { since: proc.mark() })`. */
  mark(): number {
    return this.records.length;
  }

  /** The tail of stdout and stderr, for failure messages. */
  output(maxLines = 80): string {
    const out = this.stdoutLines.slice(-maxLines).join("\n");
    const err = this.stderrText.split("\n").slice(-maxLines).join("\n");
    return `--- ${this.name} (pid ${this.pid}) stdout ---\n${out}\n--- ${this.name} stderr ---\n${err}`;
  }

  /** Records whose `msg` starts with `msg`. */
  logs(msg: string): LogRecord[] {
    return this.records.filter((r) => typeof r.msg === "string" && r.msg.startsWith(msg));
  }

  /**
   * Resolves with the first record (at or after `since`) that satisfies `predicate`. Rejects, with
   * the process's output, if the process exits first or the cap is reached.
   */
  waitForLog(predicate: (r: LogRecord) => boolean, opts: WaitForLogOptions = {}): Promise<LogRecord> {
    const timeoutMs = opts.timeoutMs ?? 15_000;
    const what = opts.what ?? "a log record";
    return new Promise<LogRecord>((resolve, reject) => {
      let i = opts.since ?? 0;
      let timer: NodeJS.Timeout | undefined;
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      const check = () => {
        for (; i < this.records.length; i++) {
          const r = this.records[i];
          let hit: boolean;
          try {
            hit = predicate(r);
          } catch (err) {
            finish();
            reject(err);
            return true;
          }
          if (hit) {
            finish();
            resolve(r);
            return true;
          }
        }
        if (this.status !== undefined) {
          finish();
          reject(new Error(`${this.name} ended (${describeExit(this.status)}) before logging ${what}\n${this.output()}`));
          return true;
        }
        return false;
      };
      if (check()) return;
      this.waiters.add(check);
      timer = setTimeout(() => {
        finish();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${this.name} to log ${what}\n${this.output()}`));
      }, timeoutMs);
    });
  }

  /** Waits for a record whose `msg` starts with `msg` and whose other fields match `fields`. */
  waitForMsg(msg: string, fields: Record<string, unknown> = {}, opts: WaitForLogOptions = {}): Promise<LogRecord> {
    return this.waitForLog(
      (r) => typeof r.msg === "string" && r.msg.startsWith(msg) && Object.entries(fields).every(([k, v]) => r[k] === v),
      { what: `"${msg}"${Object.keys(fields).length > 0 ? ` with ${JSON.stringify(fields)}` : ""}`, ...opts },
    );
  }

  /** Sends a signal by PID; a process that already exited is left alone. */
  signal(sig: NodeJS.Signals): void {
    if (this.status !== undefined) return;
    try {
      process.kill(this.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
    }
  }

  /**
   * Graceful stop: SIGTERM, then asserts exit code 0 within `timeoutMs`. A process that does not
   * exit in time is SIGKILLed and the call throws, quoting its output. A process the test already
   * killed with {@link kill9} passes.
   */
  async stop(timeoutMs = DEFAULT_STOP_TIMEOUT_MS): Promise<void> {
    if (this.status === undefined) {
      this.signal("SIGTERM");
      try {
        await withTimeout(this.exited, timeoutMs, `${this.name} to exit after SIGTERM`);
      } catch {
        this.killedByTest = true;
        this.signal("SIGKILL");
        await this.exited;
        throw new Error(`${this.name} did not exit within ${timeoutMs} ms of SIGTERM (a connection, stream or timer left open?)\n${this.output()}`);
      }
    }
    const s = this.status!;
    if (this.killedByTest) return;
    if (s.code !== 0) throw new Error(`${this.name} exited with ${describeExit(s)}, expected exit code 0 after SIGTERM\n${this.output()}`);
  }

  /** SIGKILL by PID (a crash, as the test wants it); resolves when the process is gone. */
  async kill9(): Promise<ExitStatus> {
    this.killedByTest = true;
    this.signal("SIGKILL");
    return this.exited;
  }
}

/** Starts `gateway <args>` and registers it for teardown. */
export function spawnGateway(name: string, args: readonly string[], env?: Record<string, string | undefined>): GatewayProcess {
  return new GatewayProcess(name, args, env);
}

/**
 * Runs a short-lived `gateway` command (--help, a bad flag) to completion.
 * Returns its exit status and output; fails if it runs longer than `timeoutMs`.
 */
export async function runGateway(
  args: readonly string[],
  opts: { env?: Record<string, string | undefined>; timeoutMs?: number } = {},
): Promise<ExitStatus & { stdout: string; stderr: string }> {
  const p = spawnGateway(`gateway ${args.join(" ")}`, args, opts.env);
  let s: ExitStatus;
  try {
    s = await withTimeout(p.exited, opts.timeoutMs ?? 15_000, `"gateway ${args.join(" ")}" to finish`);
  } catch (err) {
    await p.kill9();
    throw err;
  }
  return { ...s, stdout: p.stdout, stderr: p.stderr };
}

/**
 * Stops every process still running, newest first (data planes before the control plane they
 * follow), each with {@link GatewayProcess.stop}. Throws one error listing every process that did
 * not exit cleanly, after trying them all.
 */
export async function stopAllProcesses(): Promise<void> {
  const errors: string[] = [];
  for (const p of [...running].reverse()) {
    try {
      await p.stop();
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
  if (errors.length > 0) throw new Error(`teardown: ${errors.length} process(es) did not stop cleanly\n\n${errors.join("\n\n")}`);
}

/** SIGKILLs (by PID) whatever is still running and waits until it is gone. */
export async function killAllProcesses(): Promise<void> {
  await Promise.all([...running].map((p) => p.kill9()));
}

// ---- temporary directories ----

const tempDirs = new Set<string>();

/** A fresh directory under the OS temp dir, removed at teardown. */
export function tempDir(prefix = "gateway-e2e-"): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Removes the directories made by {@link tempDir}. */
export function removeTempDirs(): void {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

/** A random secret for --admin-key / --node-token. */
export function secret(prefix: string): string {
  return `${prefix}_${randomBytes(12).toString("hex")}`;
}

// ---- the planes ----

/** A running control-plane process. */
export interface ControlPlane {
  readonly proc: GatewayProcess;
  /** Base URL of the config API ("http://127.0.0.1:PORT"). */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  readonly adminKey: string;
  readonly nodeToken: string;
}

/** Options of {@link startControlPlane}. */
export interface ControlPlaneOptions {
  /** Store directory; a new temp dir by default. */
  readonly dataDir?: string;
  /** 0 (default) for any free port; a restart passes the port the first start got. */
  readonly port?: number;
  readonly adminKey?: string;
  readonly nodeToken?: string;
  readonly logLevel?: string;
  readonly name?: string;
}

/** Starts `gateway control-plane` and waits until it listens. */
export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const dataDir = opts.dataDir ?? tempDir("gateway-cp-");
  const adminKey = opts.adminKey ?? secret("adm");
  const nodeToken = opts.nodeToken ?? secret("nt");
  const args = [
    "control-plane",
    "--listen",
    `127.0.0.1:${opts.port ?? 0}`,
    "--data-dir",
    dataDir,
    "--admin-key",
    adminKey,
    "--node-token",
    nodeToken,
    "--log-level",
    opts.logLevel ?? "info",
  ];
  const proc = spawnGateway(opts.name ?? "control-plane", args);
  const rec = await proc.waitForMsg("control plane listening", {}, { timeoutMs: START_TIMEOUT_MS });
  const url = String(rec.url);
  return { proc, url, port: Number(new URL(url).port), dataDir, adminKey, nodeToken };
}

/** Starts a new control-plane process on the same port, data dir and secrets as `cp` (which must have exited). */
export function restartControlPlane(cp: ControlPlane, opts: Omit<ControlPlaneOptions, "dataDir" | "port" | "adminKey" | "nodeToken"> = {}): Promise<ControlPlane> {
  if (cp.proc.exitStatus === undefined) throw new Error("restartControlPlane: stop or kill the previous process first");
  return startControlPlane({ ...opts, name: opts.name ?? cp.proc.name, dataDir: cp.dataDir, port: cp.port, adminKey: cp.adminKey, nodeToken: cp.nodeToken });
}

/** A running data-plane process. */
export class DataPlane {
  constructor(
    readonly proc: GatewayProcess,
    /** Base URL of the proxy ("http://127.0.0.1:PORT"). */
    readonly url: string,
    readonly nodeId: string,
  ) {}

  /** Waits until the data plane logs that it applied `version` or a newer one. */
  waitForApplied(version: bigint | number, opts: WaitForLogOptions = {}): Promise<LogRecord> {
    const v = BigInt(version);
    return this.proc.waitForLog((r) => r.msg === "applied snapshot" && BigInt(String(r.version)) >= v, {
      what: `"applied snapshot" with version >= ${v}`,
      ...opts,
    });
  }
}

/** Options of {@link startDataPlane}. */
export interface DataPlaneOptions {
  /** Control-plane URL(s). */
  readonly controlPlane: string | readonly string[];
  readonly nodeId: string;
  readonly token: string;
  readonly port?: number;
  readonly drainMs?: number;
  readonly labels?: Record<string, string>;
  readonly logLevel?: string;
}

/** Starts `gateway data-plane` and waits until its proxy listens (not until it has a configuration). */
export async function startDataPlane(opts: DataPlaneOptions): Promise<DataPlane> {
  const urls = typeof opts.controlPlane === "string" ? [opts.controlPlane] : opts.controlPlane;
  const args = ["data-plane", "--listen", `127.0.0.1:${opts.port ?? 0}`, "--node-id", opts.nodeId, "--token", opts.token, "--log-level", opts.logLevel ?? "info"];
  for (const u of urls) args.push("--control-plane", u);
  if (opts.drainMs !== undefined) args.push("--drain-ms", String(opts.drainMs));
  for (const [k, v] of Object.entries(opts.labels ?? {})) args.push("--label", `${k}=${v}`);
  const proc = spawnGateway(opts.nodeId, args);
  const rec = await proc.waitForMsg("data plane listening", {}, { timeoutMs: START_TIMEOUT_MS });
  return new DataPlane(proc, String(rec.url), opts.nodeId);
}

/** A running `gateway all-in-one`. */
export interface AllInOne {
  readonly proc: GatewayProcess;
  /** Config API. */
  readonly url: string;
  /** The data plane's proxy. */
  readonly proxyUrl: string;
  readonly dataDir: string;
}

/** Starts `gateway all-in-one` on port 0 for both listeners and waits for both. */
export async function startAllInOne(opts: { dataDir?: string; adminKey?: string; env?: Record<string, string | undefined> } = {}): Promise<AllInOne> {
  const dataDir = opts.dataDir ?? tempDir("gateway-aio-");
  const args = ["all-in-one", "--listen", "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0", "--data-dir", dataDir];
  if (opts.adminKey !== undefined) args.push("--admin-key", opts.adminKey);
  const proc = spawnGateway("all-in-one", args, opts.env);
  const cp = await proc.waitForMsg("control plane listening", {}, { timeoutMs: START_TIMEOUT_MS });
  const dp = await proc.waitForMsg("data plane listening", {}, { timeoutMs: START_TIMEOUT_MS });
  return { proc, url: String(cp.url), proxyUrl: String(dp.url), dataDir };
}

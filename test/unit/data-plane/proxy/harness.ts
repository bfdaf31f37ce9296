/**
 * Real servers on 127.0.0.1:0 for the forwarding tests: a target, a node:http proxy calling
 * forward(), and a client. Every server tracks its sockets so teardown fails, instead of hanging or
 * passing, when a connection is left open.
 */
import http, { type IncomingMessage, type RequestListener, type ServerResponse } from "node:http";
import https from "node:https";
import net, { type AddressInfo, type Socket } from "node:net";
import { once } from "node:events";
import { Pool } from "undici";
import { forward, sendUpstreamError, type ForwardOptions, type ForwardOutcome, type ForwardTarget } from "../../../../data-plane/src/proxy/forward.js";
import { requestIdOf } from "../../../../data-plane/src/proxy/request-id.js";

/** A server under test plus what teardown needs. */
export interface Running {
  readonly server: net.Server;
  readonly port: number;
  readonly origin: string;
  readonly sockets: Set<Socket>;
}

const servers = new Set<Running>();
const pools = new Set<Pool>();

/** Listens on 127.0.0.1, port 0, and tracks sockets (see closeAll). */
export async function listen(server: net.Server, scheme: "http" | "https" = "http"): Promise<Running> {
  const sockets = new Set<Socket>();
  server.on(scheme === "https" ? "secureConnection" : "connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  const running: Running = { server, port, origin: `${scheme}://127.0.0.1:${port}`, sockets };
  servers.add(running);
  return running;
}

/** An HTTP target server. */
export function startTarget(handler: RequestListener): Promise<Running> {
  return listen(http.createServer(handler));
}

/** An HTTPS target server with the given key and certificate. */
export function startHttpsTarget(key: string, cert: string, handler: RequestListener): Promise<Running> {
  return listen(https.createServer({ key, cert }, handler), "https");
}

/** A raw TCP target, for responses node:http would not produce (cut bodies, odd headers). */
export function startRawTarget(onSocket: (socket: Socket) => void): Promise<Running> {
  return listen(net.createServer(onSocket));
}

/** A keep-alive pool closed at teardown. */
export function newPool(origin: string, opts?: Pool.Options): Pool {
  const pool = new Pool(origin, { pipelining: 1, connect: { timeout: 5_000 }, ...opts });
  pools.add(pool);
  return pool;
}

/** A port nothing listens on (bound then released), for refused connections. */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** One attempt as the proxy makes it: which target and pool, plus option overrides. */
export interface Attempt {
  readonly target: ForwardTarget;
  readonly pool: Pool;
  readonly opts?: Partial<ForwardOptions>;
}

/** A proxy whose handler forwards to the attempts in order, moving on while a retry is safe. */
export interface TestProxy extends Running {
  /** Outcome of each request's last attempt, in the order they finished. */
  readonly outcomes: ForwardOutcome[];
  /** Request URL of each entry in `outcomes`. */
  readonly outcomeUrls: string[];
  /** Outcome of every attempt, in order. */
  readonly attemptOutcomes: ForwardOutcome[];
  /** Resolves with the outcome of the next request's last attempt. */
  nextOutcome(): Promise<ForwardOutcome>;
}

/**
 * A node:http proxy calling forward() like the data plane's handler: attempts are tried in order
 * while the previous one failed before the response started and left the body unread; a last
 * failure before the response started is answered with sendUpstreamError.
 */
export async function startProxy(attempts: (req: IncomingMessage) => Attempt[]): Promise<TestProxy> {
  const outcomes: ForwardOutcome[] = [];
  const attemptOutcomes: ForwardOutcome[] = [];
  const outcomeUrls: string[] = [];
  const waiters: ((o: ForwardOutcome) => void)[] = [];
  const server = http.createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const requestId = requestIdOf(req);
    let outcome: ForwardOutcome | undefined;
    for (const a of attempts(req)) {
      outcome = await forward(req, res, a.target, req.url ?? "/", {
        requestId,
        clientAddr: req.socket.remoteAddress ?? "",
        passHost: "pass",
        headersTimeoutMs: 10_000,
        bodyTimeoutMs: 10_000,
        pool: a.pool,
        ...a.opts,
      });
      attemptOutcomes.push(outcome);
      if (outcome.errorClass === undefined || outcome.responseStarted || outcome.requestBodyConsumed) break;
    }
    if (outcome === undefined) throw new Error("no attempts");
    outcomes.push(outcome);
    outcomeUrls.push(req.url ?? "");
    // After the response started forward() must have cut the connection itself; leaving it to
    // sendUpstreamError here would hide a forward() that does not.
    if (outcome.errorClass !== undefined && !outcome.responseStarted) sendUpstreamError(res, outcome, requestId);
    waiters.shift()?.(outcome);
  });
  const running = await listen(server);
  return {
    ...running,
    outcomes,
    outcomeUrls,
    attemptOutcomes,
    nextOutcome: () => new Promise((resolve) => waiters.push(resolve)),
  };
}

/** A response read to the end by the client. */
export interface ClientResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly rawHeaders: string[];
  readonly body: Buffer;
}

/** Sends one request on a fresh connection (no agent) and reads the whole response. */
export function request(
  port: number,
  opts: { method?: string; path?: string; headers?: http.OutgoingHttpHeaders | string[]; body?: Buffer | string },
): Promise<ClientResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, method: opts.method ?? "GET", path: opts.path ?? "/", headers: opts.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

/**
 * Sends a request written byte for byte (for headers node:http would refuse to send) and returns
 * everything the proxy answered until it closed the connection; the request must ask for close.
 */
export async function rawRequest(port: number, head: string): Promise<string> {
  const socket = net.connect(port, "127.0.0.1");
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.write(head);
  await once(socket, "close");
  return Buffer.concat(chunks).toString("latin1");
}

/** Flat rawHeaders to lower-case name → values, to assert on what a peer actually received. */
export function headerMap(raw: readonly string[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase();
    const list = m.get(k);
    if (list) list.push(raw[i + 1]);
    else m.set(k, [raw[i + 1]]);
  }
  return m;
}

/** A promise resolved from outside, for lock-step tests (no sleeps). */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

async function closeServer(r: Running): Promise<string | undefined> {
  const closed = new Promise<void>((resolve) => r.server.close(() => resolve()));
  if (r.server instanceof http.Server) r.server.closeIdleConnections();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), 5_000)));
  const result = await Promise.race([closed, late]);
  clearTimeout(timer);
  if (result !== "late") return undefined;
  const open = r.sockets.size;
  for (const s of r.sockets) s.destroy();
  await closed;
  return `${r.origin}: ${open} connection(s) left open`;
}

/**
 * Closes pools (gracefully: a request still running makes this wait, then fail) and servers; throws
 * when something was left open, so a leak fails the test file instead of passing silently.
 */
export async function closeAll(): Promise<void> {
  const problems: string[] = [];
  for (const pool of pools) {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), 5_000)));
    const result = await Promise.race([pool.close(), late]);
    clearTimeout(timer);
    if (result === "late") {
      problems.push("a pool still had requests running");
      await pool.destroy();
    }
  }
  pools.clear();
  for (const r of servers) {
    const problem = await closeServer(r);
    if (problem !== undefined) problems.push(problem);
  }
  servers.clear();
  if (problems.length > 0) throw new Error(`teardown: ${problems.join("; ")}`);
}

/**
 * Real upstream targets for end-to-end tests: node:http servers on 127.0.0.1 port 0 that answer
 * with their own name (body and `x-target` header) and record every request they saw, so a test
 * can count where traffic went and check what was forwarded (path after strip_path, headers).
 *
 * Every target tracks its sockets; {@link closeAllTargets} (called by the shared teardown) closes
 * them all, so a target never outlives its test file.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import net, { type AddressInfo, type Socket } from "node:net";
import { once } from "node:events";

/** One request as a target saw it. */
export interface SeenRequest {
  readonly method: string;
  /** Path and query as received ("/v1/x?q=1"). */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  /** Request body (utf8). */
  readonly body: string;
}

/** A running target. */
export interface Target {
  readonly name: string;
  readonly host: "127.0.0.1";
  readonly port: number;
  /** "http://127.0.0.1:PORT", the form rule targets use. */
  readonly url: string;
  /** Requests seen since start (or the last {@link Target.clear}). */
  readonly requests: SeenRequest[];
  /** Forgets the recorded requests. */
  clear(): void;
  /** Resolves once `n` requests in total have been recorded. */
  waitForRequests(n: number, timeoutMs?: number): Promise<void>;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Options of {@link startTarget}. */
export interface TargetOptions {
  /** Answer status (default 200). */
  readonly status?: number;
  /** Answer only after this many milliseconds (a slow backend); the timer is cleared if the client leaves. */
  readonly delayMs?: number;
  /**
   * Custom answer, replacing the default (status, `x-target` header, body = name). Called after the
   * request was recorded and its body read.
   */
  readonly handler?: (req: IncomingMessage, res: ServerResponse, seen: SeenRequest) => void;
}

const targets = new Set<Target>();

/** Starts a target that answers `name` (body and `x-target: name`). */
export async function startTarget(name: string, opts: TargetOptions = {}): Promise<Target> {
  const requests: SeenRequest[] = [];
  const waiters = new Set<() => void>();
  const pending = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const seen: SeenRequest = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString("utf8") };
      requests.push(seen);
      for (const w of waiters) w();
      const answer = () => {
        if (opts.handler !== undefined) return opts.handler(req, res, seen);
        const body = name;
        res.writeHead(opts.status ?? 200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body), "x-target": name });
        res.end(body);
      };
      if (opts.delayMs === undefined) return answer();
      const t = setTimeout(() => {
        pending.delete(t);
        answer();
      }, opts.delayMs);
      pending.add(t);
      res.once("close", () => {
        clearTimeout(t);
        pending.delete(t);
      });
    });
  });
  const sockets = trackSockets(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  const target: Target = {
    name,
    host: "127.0.0.1",
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    clear: () => void requests.splice(0, requests.length),
    waitForRequests(n, timeoutMs = 15_000) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (requests.length < n) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`target ${name}: timed out after ${timeoutMs} ms waiting for ${n} requests (saw ${requests.length})`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    async close() {
      targets.delete(target);
      for (const t of pending) clearTimeout(t);
      await closeServer(server, sockets);
    },
  };
  targets.add(target);
  return target;
}

/** Options of {@link startSseTarget}. */
export interface SseTargetOptions {
  /** Number of events per response (default 5). */
  readonly events?: number;
  /** Pause between events (default 20 ms). */
  readonly intervalMs?: number;
}

/**
 * A target that streams Server-Sent Events (as an LLM API does): `data: <name> <i>` lines, one per
 * interval, then `data: [DONE]`. Its requests are recorded like {@link startTarget}'s.
 */
export function startSseTarget(name: string, opts: SseTargetOptions = {}): Promise<Target> {
  const events = opts.events ?? 5;
  const intervalMs = opts.intervalMs ?? 20;
  return startTarget(name, {
    handler: (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", "x-target": name });
      let i = 0;
      const timer = setInterval(() => {
        if (i < events) {
          res.write(`data: ${name} ${i++}\n\n`);
          return;
        }
        clearInterval(timer);
        res.end("data: [DONE]\n\n");
      }, intervalMs);
      res.once("close", () => clearInterval(timer));
    },
  });
}

/** A port on 127.0.0.1 that nothing listens on (bound, then released): connecting to it is refused. */
export async function refusedPort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Closes every target still open (the shared teardown calls this). */
export async function closeAllTargets(): Promise<void> {
  await Promise.all([...targets].map((t) => t.close()));
}

/** Tracks a server's sockets so close can end keep-alive connections too. */
export function trackSockets(server: net.Server): Set<Socket> {
  const sockets = new Set<Socket>();
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  return sockets;
}

/** Stops listening and destroys the remaining sockets. */
export async function closeServer(server: net.Server, sockets: Set<Socket>): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const s of sockets) s.destroy();
  await closed;
}

import type { IncomingMessage, ServerResponse } from "node:http";
import type { CompiledBackend, CompiledRoute, CompiledTarget } from "../config/compile.js";
import type { LiveConfig } from "../config/live.js";
import { MethodNotAllowed } from "../router/match.js";
import { hashKeyOf } from "../split/hash-key.js";
import { IncomingRequestView, type RequestViewEnv } from "../split/incoming-request-view.js";
import { sendError } from "./errors.js";
import { chooseBackend, pickTarget } from "./select.js";
import { forward, sendUpstreamError, type ForwardOutcome } from "./forward.js";
import { requestIdOf } from "./request-id.js";

/** Observers of each attempt: passive health, statistics for reports, metrics. */
export interface AttemptObserver {
  (backend: CompiledBackend, target: CompiledTarget, outcome: ForwardOutcome, route: CompiledRoute): void;
}

/** What the request handler needs. */
export interface ProxyHandlerOptions {
  readonly live: LiveConfig;
  /** Trusted proxies and geo database for split variables. */
  readonly env?: RequestViewEnv;
  readonly observe?: AttemptObserver;
  /** Aborted at shutdown deadline: cuts the attempts still running. */
  readonly signal?: AbortSignal;
}

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

/**
 * The per-request path: match a rule, choose the backend (canary, then split rules, then the
 * rule's own), pick a target, forward, and retry on another target when that is safe. Everything
 * it reads was compiled when the snapshot arrived; it allocates little beyond what forwarding needs.
 */
export function createProxyHandler(opts: ProxyHandlerOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const env = opts.env ?? {};
  const live = opts.live;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = requestIdOf(req);
    const config = live.current;
    if (config === undefined) {
      sendError(res, 503, "no_config", "this data plane has not received its configuration yet", requestId, { retryAfterSeconds: 1 });
      return;
    }
    const method = req.method ?? "GET";
    const url = req.url ?? "/";
    const matched = config.router.match(config.router.usesHosts ? hostOf(req) : "", method, url);
    if (matched === undefined) {
      sendError(res, 404, "no_route", "no rule matches this request", requestId);
      return;
    }
    if (matched instanceof MethodNotAllowed) {
      sendError(res, 405, "method_not_allowed", `method ${method} is not allowed here`, requestId, { allow: matched.allow.split(", ") });
      return;
    }
    const route = matched;

    let view: IncomingRequestView | undefined;
    let backend = route.backend;
    if (route.canary !== undefined || route.split.length > 0) {
      view = new IncomingRequestView(req, env);
      if (route.needsJwt) {
        const tenant = config.tenants.get(route.tenantId);
        const verifier = tenant?.jwt;
        if (verifier !== undefined) {
          const token = verifier.token(view.header(verifier.header));
          if (token !== undefined) view.setJwtClaims(await verifier.verify(token));
        }
      }
      backend = chooseBackend(route, view);
    }

    let hashKey: string | undefined;
    if (backend.hashOn !== undefined) {
      view ??= new IncomingRequestView(req, env);
      hashKey = hashKeyOf(backend.hashOn, view);
    }

    const path = route.strip > 0 ? stripPath(url, route.strip) : url;
    const clientAddr = req.socket.remoteAddress ?? "";
    const policy = backend.policy;
    const retryable = IDEMPOTENT.has(method) || policy.retryNonIdempotent;
    let exclude: CompiledTarget | undefined;
    for (let attempt = 0; ; attempt++) {
      const target = pickTarget(backend, hashKey, exclude);
      if (target === undefined) {
        sendError(res, 503, "no_healthy_target", `no available target in ${backendLabel(backend)}`, requestId);
        return;
      }
      target.load.inFlight++;
      let outcome: ForwardOutcome;
      try {
        outcome = await forward(
          req,
          res,
          { origin: target.origin, basePath: target.basePath, hostHeader: policy.passHost === "rewrite" ? policy.upstreamHost : undefined },
          path,
          {
            requestId,
            clientAddr,
            passHost: policy.passHost,
            headersTimeoutMs: policy.readTimeoutMs,
            bodyTimeoutMs: policy.readTimeoutMs,
            pool: live.pool(target),
            signal: opts.signal,
          },
        );
      } finally {
        target.load.inFlight--;
      }
      opts.observe?.(backend, target, outcome, route);
      if (outcome.errorClass === undefined) return;
      // Retry only what cannot have reached the application twice: nothing sent to the client, the
      // body still unread, and either the connection never carried the request or it is idempotent.
      const safe =
        !outcome.responseStarted &&
        !outcome.requestBodyConsumed &&
        outcome.errorClass !== "aborted" &&
        (retryable || isConnectFailure(outcome));
      if (attempt >= policy.retries || !safe || res.destroyed) {
        sendUpstreamError(res, outcome, requestId);
        return;
      }
      exclude = target;
    }
  }

  return (req, res) => {
    handle(req, res).catch((err: unknown) => {
      // A bug, not an upstream failure: answer 500 once and keep serving.
      console.error("proxy handler failed", err);
      if (!res.headersSent) sendError(res, 500, "internal", "internal error", requestIdOf(req));
      else res.destroy();
    });
  };
}

function isConnectFailure(o: ForwardOutcome): boolean {
  return o.errorClass === "connect_refused" || o.errorClass === "connect_timeout" || o.errorClass === "dns";
}

function backendLabel(b: CompiledBackend): string {
  return b.id.startsWith("rule/") ? `the rule's targets` : `upstream ${b.id}`;
}

/** Removes the rule's prefix from the path, keeping a leading slash and the query string. */
export function stripPath(url: string, n: number): string {
  const rest = url.slice(n);
  if (rest === "") return "/";
  const c = rest.charCodeAt(0);
  if (c === 0x2f) return rest;
  return "/" + rest; // "?q" → "/?q"; "x" (from "/api*") → "/x"
}

/** Lower-case Host (or :authority) without port, read from rawHeaders to avoid building req.headers. */
export function hostOf(req: IncomingMessage): string {
  const raw = req.rawHeaders;
  let value: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.length === 4 && (name === "Host" || name === "host" || name.toLowerCase() === "host")) {
      value = raw[i + 1];
      break;
    }
    if (name === ":authority") value = raw[i + 1];
  }
  if (value === undefined) return "";
  let end = value.length;
  if (value.charCodeAt(0) === 0x5b /* [ */) {
    const close = value.indexOf("]");
    return (close > 0 ? value.slice(1, close) : value).toLowerCase();
  }
  const colon = value.lastIndexOf(":");
  if (colon !== -1) end = colon;
  return value.slice(0, end).toLowerCase();
}

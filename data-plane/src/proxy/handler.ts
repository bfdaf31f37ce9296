import type { IncomingMessage, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import type { CompiledBackend, CompiledRoute, CompiledTarget } from "../config/compile.js";
import type { LiveConfig } from "../config/live.js";
import type { SequenceSource } from "../counters/source.js";
import { MethodNotAllowed } from "../router/match.js";
import { hashKeyOf } from "../split/hash-key.js";
import { IncomingRequestView, type RequestViewEnv } from "../split/incoming-request-view.js";
import { sendError } from "./errors.js";
import { chooseBackend, pickTarget } from "./select.js";
import { bufferBody, forward, replayHeld, sendUpstreamError, smallBodyLength, type ForwardOutcome, type HeldResponse } from "./forward.js";
import type { ErrorClass } from "./errors.js";
import { requestIdOf } from "./request-id.js";

/** Observers of each attempt: passive health, statistics for reports, metrics. */
export interface AttemptObserver {
  (backend: CompiledBackend, target: CompiledTarget, outcome: ForwardOutcome, route: CompiledRoute): void;
}

/**
 * Called once per request when the handler is done with it (per-rule metrics, retries, access log).
 * Positional, so the hot path allocates no record for it. `route`, `backend` and `target` are
 * undefined when the request did not get that far (404, 405, no configuration, no target); `status`
 * is what the client got (499 when it went away first); `startMs` is performance.now() at arrival.
 */
export interface RequestObserver {
  (
    req: IncomingMessage,
    requestId: string,
    route: CompiledRoute | undefined,
    backend: CompiledBackend | undefined,
    target: CompiledTarget | undefined,
    status: number,
    attempts: number,
    startMs: number,
    errorClass: ErrorClass | undefined,
  ): void;
}

/** What the request handler needs. */
export interface ProxyHandlerOptions {
  readonly live: LiveConfig;
  /** Trusted proxies and geo database for split variables. */
  readonly env?: RequestViewEnv;
  readonly observe?: AttemptObserver;
  readonly onDone?: RequestObserver;
  /** Aborted at shutdown deadline: cuts the attempts still running. */
  readonly signal?: AbortSignal;
  /** Fleet-wide sequence positions (Redis counters); without it balancers rotate locally. */
  readonly counters?: SequenceSource;
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

  const onDone = opts.onDone;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const start = performance.now();
    const requestId = requestIdOf(req);
    const config = live.current;
    if (config === undefined) {
      sendError(res, 503, "no_config", "this data plane has not received its configuration yet", requestId, { retryAfterSeconds: 1 });
      onDone?.(req, requestId, undefined, undefined, undefined, 503, 0, start, undefined);
      return;
    }
    const method = req.method ?? "GET";
    const url = req.url ?? "/";
    const matched = config.router.match(config.router.usesHosts ? hostOf(req) : "", method, url);
    if (matched === undefined) {
      sendError(res, 404, "no_route", "no rule matches this request", requestId);
      onDone?.(req, requestId, undefined, undefined, undefined, 404, 0, start, undefined);
      return;
    }
    if (matched instanceof MethodNotAllowed) {
      sendError(res, 405, "method_not_allowed", `method ${method} is not allowed here`, requestId, { allow: matched.allow.split(", ") });
      onDone?.(req, requestId, undefined, undefined, undefined, 405, 0, start, undefined);
      return;
    }
    const route = matched;

    let view: IncomingRequestView | undefined;
    let backend = route.backend;
    if (route.needsJwt) {
      // Claims are read only from a verified token, and verification is async: done before any
      // expression or hash key reads them, and only for rules that use them.
      view = new IncomingRequestView(req, env);
      const verifier = config.tenants.get(route.tenantId)?.jwt;
      if (verifier !== undefined) {
        const token = verifier.token(view.header(verifier.header));
        if (token !== undefined) view.setJwtClaims(await verifier.verify(token));
      }
    }
    if (route.canary !== undefined || route.split.length > 0) {
      view ??= new IncomingRequestView(req, env);
      const chosen = chooseBackend(route, view, opts.counters);
      backend = chosen instanceof Promise ? await chosen : chosen;
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
    // A small body is read first when a retry could need it again (only a buffered body can be
    // replayed; a streamed one is sent once). GET and HEAD are skipped: they almost never carry one.
    let body: Buffer | undefined;
    if (retryable && policy.retries > 0 && method !== "GET" && method !== "HEAD") {
      const length = smallBodyLength(req.rawHeaders);
      if (length > 0) {
        body = await bufferBody(req, length, policy.sendTimeoutMs);
        if (body === undefined) {
          // The client went away or stalled mid-body: nothing to forward, nothing to answer.
          if (!res.destroyed) res.destroy();
          onDone?.(req, requestId, route, backend, undefined, 499, 0, start, "aborted");
          return;
        }
      }
    }
    // Overall budget of all attempts (0: none): bounds the wait for response headers across
    // attempts, and no new attempt starts once it is spent. A response that started streaming is
    // not cut by it (the read timeout still applies), so long LLM streams are safe.
    const deadline = policy.retryTimeoutMs > 0 ? start + policy.retryTimeoutMs : 0;
    let exclude: CompiledTarget | undefined;
    let held: HeldResponse | undefined;
    let last: ForwardOutcome | undefined;
    for (let attempt = 0; ; attempt++) {
      let headersTimeoutMs = policy.readTimeoutMs;
      if (deadline !== 0) {
        const left = Math.ceil(deadline - performance.now());
        if (left <= 0 && last !== undefined) {
          giveUp(res, last, held, requestId);
          onDone?.(req, requestId, route, backend, exclude, finalStatus(last, held), attempt, start, last.errorClass);
          return;
        }
        if (headersTimeoutMs === 0 || left < headersTimeoutMs) headersTimeoutMs = Math.max(1, left);
      }
      const picked = pickTarget(backend, hashKey, exclude, opts.counters);
      const target = picked instanceof Promise ? await picked : picked;
      if (target === undefined) {
        if (held !== undefined) replayHeld(res, held);
        else sendError(res, 503, "no_healthy_target", `no available target in ${backendLabel(backend)}`, requestId);
        onDone?.(req, requestId, route, backend, undefined, held?.status ?? 503, attempt, start, undefined);
        return;
      }
      target.load.inFlight++;
      let outcome: ForwardOutcome;
      try {
        outcome = await forward(
          req,
          res,
          target.forward,
          path,
          {
            requestId,
            clientAddr,
            passHost: policy.passHost,
            headersTimeoutMs,
            bodyTimeoutMs: policy.readTimeoutMs,
            pool: live.pool(target),
            signal: opts.signal,
            // A retryable status is kept back (not relayed) only while another attempt may follow.
            holdStatuses: retryable && attempt < policy.retries ? policy.retryStatuses : undefined,
            body,
            sendTimeoutMs: policy.sendTimeoutMs,
          },
        );
      } finally {
        target.load.inFlight--;
      }
      opts.observe?.(backend, target, outcome, route);
      if (outcome.errorClass === undefined && outcome.held === undefined) {
        onDone?.(req, requestId, route, backend, target, outcome.status, attempt + 1, start, undefined);
        return;
      }
      if (outcome.held !== undefined) held = outcome.held;
      last = outcome;
      // Retry only what cannot have reached the application twice: nothing sent to the client, the
      // body still unread, and either the connection never carried the request or it is idempotent.
      // A held response qualifies by construction (forward holds only what can be sent again).
      const safe =
        outcome.held !== undefined ||
        (!outcome.responseStarted &&
          !outcome.requestBodyConsumed &&
          outcome.errorClass !== "aborted" &&
          (retryable || isConnectFailure(outcome)));
      if (attempt >= policy.retries || !safe || res.destroyed) {
        giveUp(res, outcome, held, requestId);
        onDone?.(req, requestId, route, backend, target, finalStatus(outcome, held), attempt + 1, start, outcome.errorClass);
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

/**
 * Answers once no further attempt will be made: a target's own answer held back earlier is better
 * than a gateway error (as Envoy returns the last upstream response when retries run out), unless
 * the client is gone or a response already started (then the connection is cut).
 */
function giveUp(res: ServerResponse, last: ForwardOutcome, held: HeldResponse | undefined, requestId: string): void {
  if (held !== undefined && !last.responseStarted && last.errorClass !== "aborted") replayHeld(res, held);
  else sendUpstreamError(res, last, requestId);
}

function finalStatus(last: ForwardOutcome, held: HeldResponse | undefined): number {
  return held !== undefined && !last.responseStarted && last.errorClass !== "aborted" ? held.status : last.status;
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

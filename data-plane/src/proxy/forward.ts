import type { IncomingMessage, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { errors, type Dispatcher } from "undici";
import {
  classifyError,
  errorCodeForErrorClass,
  messageForErrorClass,
  sendError,
  statusForErrorClass,
  type ErrorClass,
} from "./errors.js";
import { buildUpstreamHeaders, filterResponseHeaders, type PassHost } from "./headers.js";

/** Where one attempt goes: a target picked by the balancer, with its upstream's path prefix. */
export interface ForwardTarget {
  /** "http(s)://host:port" of the target; the pool in ForwardOptions must be this origin's. */
  readonly origin: string;
  /** Prefix prepended to the request path ("" for none), e.g. "/v2" for a versioned backend. */
  readonly basePath: string;
  /** Host header for passHost "rewrite" (from the upstream's config). */
  readonly hostHeader?: string;
}

/** Per-attempt settings, all resolved by the caller before forwarding (the request path only reads). */
export interface ForwardOptions {
  /** Id for X-Request-Id upstream (kept from the client when it sent one); see requestIdOf(). */
  readonly requestId: string;
  /** Client socket address, appended to X-Forwarded-For. */
  readonly clientAddr: string;
  /** Host header policy; "rewrite" uses target.hostHeader. */
  readonly passHost: PassHost;
  /** Longest wait for the target's response headers once the request is sent (0 disables). */
  readonly headersTimeoutMs: number;
  /**
   * Longest silence between two body chunks of the response (0 disables). An idle gap, not a total:
   * long streamed (LLM, SSE) responses must not be cut while they keep producing.
   */
  readonly bodyTimeoutMs: number;
  /** Aborts the attempt from outside (e.g. shutdown or an overall deadline). */
  readonly signal?: AbortSignal;
  /** The target origin's pool, from PoolRegistry. */
  readonly pool: Dispatcher;
  /**
   * Statuses the caller would rather retry than relay (the upstream's retry statuses, passed only
   * while a retry is still allowed). Such a response is not committed to the client: its body is
   * read (up to HOLD_BODY_LIMIT) and returned in `ForwardOutcome.held`, and the connection goes back
   * to the pool. Applies only when nothing of the request has to be streamed (no body, or `body`
   * given): a streamed body cannot be replayed, so holding its answer would only lose it.
   */
  readonly holdStatuses?: ReadonlySet<number>;
  /**
   * The request body, already read by the caller (a small body buffered so that a failed attempt
   * can be replayed on another target). Sent instead of streaming `req`.
   */
  readonly body?: Buffer;
  /**
   * Longest silence between two chunks of a streamed request body (0 or unset disables), as
   * APISIX's send timeout. undici has no request-side timeout, so this is the client socket's idle
   * timer while the body streams: it fires when the client stalls, and when the target stops reading
   * (backpressure stops us reading the client). The attempt is then aborted as "aborted" and the
   * client connection closed; the target is not blamed, since a stalled client is the usual cause.
   */
  readonly sendTimeoutMs?: number;
}

/**
 * Upper bound of a held response's body (see ForwardOptions.holdStatuses). Error pages are small; a
 * larger answer is relayed as it is (committed, not retried) rather than buffered without limit.
 */
export const HOLD_BODY_LIMIT = 64 * 1024;

/** A complete response kept back from the client (see ForwardOptions.holdStatuses). */
export interface HeldResponse {
  readonly status: number;
  readonly statusText: string;
  /** Response headers, hop-by-hop fields already removed (writeHead's flat list). */
  readonly headers: string[];
  readonly body: Buffer;
}

/** What happened, for the retry layer, passive health and metrics. */
export interface ForwardOutcome {
  /**
   * The target's status when it answered (even if the response was cut later), else the status the
   * caller should answer with (statusForErrorClass).
   */
  readonly status: number;
  /** Set when the attempt failed; a response cut after it started still counts as failed. */
  readonly errorClass?: ErrorClass;
  /** The underlying error, for logs only (its message may name internal addresses). */
  readonly error?: Error;
  /**
   * Whether anything was committed to the client (headers at least). When true, the caller can
   * neither retry nor send an error response: forward() has already destroyed the client's
   * connection if the response failed midway.
   */
  readonly responseStarted: boolean;
  /**
   * Whether the client's request body was (even partly) read or discarded. While false the body is
   * still intact in the IncomingMessage, so another forward() on another target can stream it;
   * connect failures (refused, DNS, connect timeout) leave it false, since undici only starts
   * reading the body once the request is written to a connected socket.
   */
  readonly requestBodyConsumed: boolean;
  /** From forward() being called until the target's response ended or the attempt failed. */
  readonly durationMs: number;
  /**
   * Set when the target answered with one of `holdStatuses` and the response was kept back whole:
   * nothing was sent to the client (`responseStarted` is false, `errorClass` undefined). The caller
   * retries, or relays it with replayHeld().
   */
  readonly held?: HeldResponse;
}

const kForward = Symbol("forward");

type TrackedResponse = ServerResponse & { [kForward]?: ForwardHandler };

// Listeners shared by all requests: the emitter passes the response as `this`, and the response
// points at its current attempt, so no closure is allocated per request.
function onResponseClose(this: TrackedResponse): void {
  this[kForward]?.onClientClose();
}
function onResponseDrain(this: TrackedResponse): void {
  this[kForward]?.onClientDrain();
}
function uncorkAtTickEnd(h: ForwardHandler): void {
  h.uncork();
}

/**
 * undici dispatch handler for one attempt. Uses undici's raw-header (onHeaders/onData) handler
 * shape: it is what undici's own HTTP/1.1 client speaks, so undici neither wraps the handler nor
 * parses the headers into an object we would then have to flatten again.
 */
class ForwardHandler implements Dispatcher.DispatchHandler {
  resolve!: (outcome: ForwardOutcome) => void;
  private abortUpstream: ((err?: Error) => void) | null = null;
  private pendingAbort: Error | null = null;
  private resumeUpstream: (() => void) | null = null;
  private drainListening = false;
  private status = 0;
  /** The response being held back (holdStatuses); null when relaying or before headers. */
  private holding: { statusText: string; headers: string[]; chunks: Buffer[]; size: number } | null = null;
  private held: HeldResponse | undefined;
  private responseStarted = false;
  private wroteBody = false;
  private corked = false;
  private done = false;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: TrackedResponse,
    private readonly hasBody: boolean,
    private readonly start: number,
    private readonly signal: AbortSignal | undefined,
    private readonly holdStatuses: ReadonlySet<number> | undefined,
  ) {}

  onConnect(abort: (err?: Error) => void): void {
    if (this.pendingAbort !== null) {
      abort(this.pendingAbort);
      return;
    }
    this.abortUpstream = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    // 1xx interim responses (100 Continue, 103 Early Hints) are not relayed; the final one follows.
    if (statusCode < 200) return true;
    const res = this.res;
    if (res.destroyed) {
      this.onClientClose();
      return false;
    }
    this.status = statusCode;
    this.resumeUpstream = resume;
    if (this.holdStatuses !== undefined && this.holdStatuses.has(statusCode)) {
      // Filtered now, so a header Node would refuse fails this attempt before anything is decided.
      this.holding = { statusText, headers: filterResponseHeaders(rawHeaders), chunks: [], size: 0 };
      return true;
    }
    // If Node refuses a header from the target, this throws before anything is committed; undici
    // then aborts with that error and the caller can still answer 502.
    res.writeHead(statusCode, statusText === "" ? undefined : statusText, filterResponseHeaders(rawHeaders));
    this.responseStarted = true;
    // Cork until the end of this tick: the head, the body chunks undici parsed from the same read
    // and the end of a small response then leave in one write (end() uncorks). A response still
    // open at the end of the tick (SSE, slow first byte) is flushed then, headers included, so the
    // client sees it start as soon as the target sent it; later chunks are written uncorked.
    res.cork();
    this.corked = true;
    process.nextTick(uncorkAtTickEnd, this);
    return true;
  }

  onData(chunk: Buffer): boolean {
    const holding = this.holding;
    if (holding !== null) {
      holding.chunks.push(chunk);
      holding.size += chunk.length;
      if (holding.size <= HOLD_BODY_LIMIT) return true;
      // Too large to keep back: relay it after all (it is then an ordinary, committed response).
      this.holding = null;
      const res = this.res;
      if (res.destroyed) {
        this.onClientClose();
        return true;
      }
      res.writeHead(this.status, holding.statusText === "" ? undefined : holding.statusText, holding.headers);
      this.responseStarted = true;
      this.wroteBody = true;
      let ok = true;
      for (const c of holding.chunks) ok = res.write(c);
      if (ok) return true;
      this.drainListening = true;
      res.on("drain", onResponseDrain);
      return false;
    }
    this.wroteBody = true;
    if (this.res.write(chunk)) return true;
    // The client reads slower than the target writes: pause reading the target until it drains.
    if (!this.drainListening) {
      this.drainListening = true;
      this.res.on("drain", onResponseDrain);
    }
    return false;
  }

  onComplete(): void {
    if (this.done) return;
    const holding = this.holding;
    if (holding !== null) {
      this.holding = null;
      const body = holding.chunks.length === 1 ? holding.chunks[0] : Buffer.concat(holding.chunks, holding.size);
      this.held = { status: this.status, statusText: holding.statusText, headers: holding.headers, body };
      this.finish(undefined, undefined);
      return;
    }
    this.corked = false; // end() uncorks fully
    this.res.end();
    this.finish(undefined, undefined);
  }

  onError(err: Error): void {
    if (this.done) return;
    const cls = this.clientGone() ? "aborted" : classifyError(err);
    // A cut response cannot be repaired: closing the connection is the only way to tell the client
    // the body is incomplete (a chunked response would otherwise look complete).
    if (this.responseStarted && !this.res.destroyed) this.res.destroy();
    this.finish(cls, err);
  }

  onClientClose(): void {
    if (this.done) return;
    const err = new errors.RequestAbortedError();
    if (this.abortUpstream !== null) this.abortUpstream(err);
    // Still queued in the pool or connecting: abort as soon as undici hands us the request.
    else this.pendingAbort = err;
  }

  onClientDrain(): void {
    this.resumeUpstream?.();
  }

  /** AbortSignal listener (an EventListener object, so no closure per request). */
  handleEvent(): void {
    if (this.done) return;
    const reason = this.signal?.reason;
    const err = reason instanceof Error ? reason : new errors.RequestAbortedError();
    if (this.abortUpstream !== null) this.abortUpstream(err);
    else this.pendingAbort = err;
  }

  uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    const res = this.res;
    if (res.destroyed || res.writableEnded) return;
    if (!this.wroteBody) res.flushHeaders();
    res.uncork();
  }

  private clientGone(): boolean {
    const req = this.req;
    return this.res.destroyed || (req.destroyed && !req.complete);
  }

  private finish(errorClass: ErrorClass | undefined, error: Error | undefined): void {
    this.done = true;
    this.holding = null;
    if (this.signal !== undefined) this.signal.removeEventListener("abort", this);
    this.sendTimer?.stop();
    const req = this.req;
    const outcome: ForwardOutcome = {
      status: this.responseStarted || errorClass === undefined ? this.status : statusForErrorClass(errorClass),
      errorClass,
      error,
      responseStarted: this.responseStarted,
      // readableDidRead: a 'data' event happened; destroyed: undici discards the body on abort.
      // hasBody is false when the caller passed the body buffered: it can always be sent again.
      requestBodyConsumed: this.hasBody && (req.readableDidRead || req.destroyed),
      durationMs: performance.now() - this.start,
      held: this.held,
    };
    this.resolve(outcome);
  }

  /** Idle timer of a streamed request body (ForwardOptions.sendTimeoutMs); undefined when off. */
  sendTimer: SendTimer | undefined;
}

/**
 * Joins an upstream's base path and the request's path-with-query without doubling or losing the
 * slash between them ("/v2" + "/users?x=1" → "/v2/users?x=1").
 */
export function joinPath(basePath: string, path: string): string {
  if (basePath === "") return path;
  const baseSlash = basePath.charCodeAt(basePath.length - 1) === 0x2f;
  const pathSlash = path.charCodeAt(0) === 0x2f;
  if (baseSlash && pathSlash) return basePath + path.slice(1);
  if (baseSlash || pathSlash || path === "" || path.charCodeAt(0) === 0x3f /* ? */) return basePath + path;
  return basePath + "/" + path;
}

/**
 * Forwards one request to one target, streaming both ways with backpressure: the client's body is
 * piped to the target as it arrives, the target's response is written to the client as it is
 * produced (headers flushed at once, no buffering), so streamed (SSE, LLM) responses flow through.
 *
 * Never writes an error response itself: when the attempt fails before anything was sent to the
 * client, the outcome says so and the caller decides (retry on another target if
 * `requestBodyConsumed` is false, or sendUpstreamError). When it fails after the response started,
 * the client connection is destroyed. A client that disconnects aborts the upstream request.
 * Resolves, never rejects.
 */
export function forward(
  req: IncomingMessage,
  res: ServerResponse,
  target: ForwardTarget,
  path: string,
  opts: ForwardOptions,
): Promise<ForwardOutcome> {
  const start = performance.now();
  const tracked = res as TrackedResponse;
  const signal = opts.signal;
  const head = buildUpstreamHeaders(req.rawHeaders, {
    clientAddr: opts.clientAddr,
    requestId: opts.requestId,
    passHost: opts.passHost === "rewrite" && target.hostHeader === undefined ? "node" : opts.passHost,
    rewriteHost: target.hostHeader,
  });
  const buffered = opts.body;
  const streamed = head.hasBody && buffered === undefined;
  // Holding only helps when the request can be sent again: nothing to stream, or a buffered body.
  const hold = streamed ? undefined : opts.holdStatuses;
  const handler = new ForwardHandler(req, tracked, streamed, start, signal, hold);
  const done = new Promise<ForwardOutcome>((resolve) => {
    handler.resolve = resolve;
  });

  if (res.destroyed || signal?.aborted) {
    handler.onError(new errors.RequestAbortedError());
    return done;
  }
  // A retry reuses the response: the listener is registered once, the pointer moves to the new attempt.
  if (tracked[kForward] === undefined) res.on("close", onResponseClose);
  tracked[kForward] = handler;
  if (signal !== undefined) signal.addEventListener("abort", handler);
  if (streamed && opts.sendTimeoutMs !== undefined && opts.sendTimeoutMs > 0 && !req.complete) {
    handler.sendTimer = new SendTimer(req, opts.sendTimeoutMs);
  }

  try {
    opts.pool.dispatch(
      {
        origin: target.origin,
        path: joinPath(target.basePath, path),
        method: req.method ?? "GET",
        headers: head.headers,
        body: buffered ?? (head.hasBody ? req : null),
        headersTimeout: opts.headersTimeoutMs,
        bodyTimeout: opts.bodyTimeoutMs,
      },
      handler,
    );
  } catch (err) {
    // undici reports dispatch errors through onError; a custom Dispatcher might throw instead.
    handler.onError(err instanceof Error ? err : new Error(String(err)));
  }
  return done;
}

/**
 * The client socket's idle timer while a request body streams (ForwardOptions.sendTimeoutMs).
 * Cleared as soon as the body has been read or the attempt ends: left on the socket, it would cut a
 * client that is only waiting for a slow answer (Node destroys a socket whose timeout nobody handles).
 */
class SendTimer {
  private readonly onTimeout = (): void => {
    // Destroying the request fails the upload; forward() then reports "aborted" (client side).
    if (!this.req.complete) this.req.destroy();
  };
  private readonly onEnd = (): void => this.stop();
  private active = true;

  constructor(
    private readonly req: IncomingMessage,
    ms: number,
  ) {
    req.setTimeout(ms, this.onTimeout);
    req.once("end", this.onEnd);
  }

  stop(): void {
    if (!this.active) return;
    this.active = false;
    this.req.removeListener("timeout", this.onTimeout);
    this.req.removeListener("end", this.onEnd);
    if (!this.req.socket?.destroyed) this.req.setTimeout(0);
  }
}

/** Largest request body buffered so that a retry can send it again (see bufferBody). */
export const BUFFERED_BODY_LIMIT = 64 * 1024;

/**
 * The request's declared body length when it is small enough to buffer: Content-Length from 1 to
 * BUFFERED_BODY_LIMIT and no Transfer-Encoding; 0 otherwise (no body, chunked, or too large: those
 * stream and are never replayed). Reads rawHeaders, so req.headers is never built.
 */
export function smallBodyLength(rawHeaders: readonly string[]): number {
  let length = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i];
    if (name.length === 14 && name.toLowerCase() === "content-length") {
      const v = rawHeaders[i + 1];
      if (!/^\d{1,7}$/.test(v)) return 0;
      length = Number(v);
    } else if (name.length === 17 && name.toLowerCase() === "transfer-encoding") {
      return 0;
    }
  }
  return length <= BUFFERED_BODY_LIMIT ? length : 0;
}

function ignoreError(): void {
  // Errors of a request being buffered end in its 'close'; the listener only keeps them from
  // being thrown as unhandled.
}

/**
 * Reads a small request body whole (its length from smallBodyLength), so that retries can resend it.
 * Resolves undefined when the client leaves, sends a body of another length, or stays silent for
 * `idleTimeoutMs` (the upstream's send timeout; 0 waits indefinitely).
 */
export function bufferBody(req: IncomingMessage, length: number, idleTimeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const timer = idleTimeoutMs > 0 ? new SendTimer(req, idleTimeoutMs) : undefined;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      size += c.length;
    };
    const settle = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      timer?.stop();
      req.removeListener("data", onData);
      resolve(ok && size === length ? Buffer.concat(chunks, size) : undefined);
    };
    req.on("error", ignoreError);
    req.on("data", onData);
    req.once("end", () => settle(true));
    req.once("close", () => settle(false));
  });
}

/**
 * Relays a response that forward() held back (ForwardOutcome.held), when the caller decides not to
 * retry after all: the client gets the target's own answer, not a gateway error.
 */
export function replayHeld(res: ServerResponse, held: HeldResponse): void {
  if (res.destroyed || res.headersSent) return;
  res.writeHead(held.status, held.statusText === "" ? undefined : held.statusText, held.headers);
  res.end(held.body);
}

/**
 * Answers a failed attempt: the JSON error (502 upstream_unavailable or 504 upstream_timeout) when
 * nothing was sent yet, or destroys the connection when the response had started. For the caller
 * once it has decided not to retry.
 */
export function sendUpstreamError(res: ServerResponse, outcome: ForwardOutcome, requestId: string): void {
  if (outcome.responseStarted) {
    if (!res.destroyed) res.destroy();
    return;
  }
  const cls = outcome.errorClass ?? "other";
  sendError(res, statusForErrorClass(cls), errorCodeForErrorClass(cls), messageForErrorClass(cls), requestId);
}

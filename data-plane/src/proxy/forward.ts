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
    if (this.signal !== undefined) this.signal.removeEventListener("abort", this);
    const req = this.req;
    const outcome: ForwardOutcome = {
      status: this.responseStarted || errorClass === undefined ? this.status : statusForErrorClass(errorClass),
      errorClass,
      error,
      responseStarted: this.responseStarted,
      // readableDidRead: a 'data' event happened; destroyed: undici discards the body on abort.
      requestBodyConsumed: this.hasBody && (req.readableDidRead || req.destroyed),
      durationMs: performance.now() - this.start,
    };
    this.resolve(outcome);
  }
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
  const handler = new ForwardHandler(req, tracked, head.hasBody, start, signal);
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

  try {
    opts.pool.dispatch(
      {
        origin: target.origin,
        path: joinPath(target.basePath, path),
        method: req.method ?? "GET",
        headers: head.headers,
        body: head.hasBody ? req : null,
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

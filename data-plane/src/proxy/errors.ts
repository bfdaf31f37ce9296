import type { ServerResponse } from "node:http";

/**
 * Machine-readable codes of the gateway's own error responses, so clients and dashboards can tell
 * "no rule matched" from "the target is down" without parsing messages. Open-ended so other parts
 * of the data plane (auth, rate limits) can add theirs.
 */
export type ErrorCode =
  | "no_route"
  | "method_not_allowed"
  | "upstream_unavailable"
  | "upstream_timeout"
  | "no_healthy_target"
  | "no_config"
  | (string & {});

/** Extra headers some statuses need (405 must list what is allowed, RFC 9110 §15.5.6). */
export interface ErrorResponseOptions {
  /** Methods for the Allow header of a 405. */
  readonly allow?: readonly string[];
  /** Seconds for Retry-After, e.g. on a 503 while no configuration has arrived yet. */
  readonly retryAfterSeconds?: number;
}

/**
 * Writes the gateway's JSON error: `{"error": {"code", "message", "request_id"}}` with
 * X-Request-Id, so a client can quote the id and an operator can find the request in the logs.
 * When the response already started (headers sent) a JSON body can no longer be framed, so the
 * connection is destroyed instead, which the client sees as a truncated response; when the client
 * is gone it does nothing.
 */
export function sendError(
  res: ServerResponse,
  status: number,
  code: ErrorCode,
  message: string,
  requestId: string,
  opts?: ErrorResponseOptions,
): void {
  if (res.destroyed || res.writableEnded) return;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: { code, message, request_id: requestId } });
  const headers: string[] = [
    "content-type",
    "application/json",
    "content-length",
    String(Buffer.byteLength(body)),
    "x-request-id",
    requestId,
    // Errors describe this attempt only; a cache must not replay them.
    "cache-control",
    "no-store",
  ];
  if (opts?.allow !== undefined) headers.push("allow", opts.allow.join(", "));
  if (opts?.retryAfterSeconds !== undefined) headers.push("retry-after", String(opts.retryAfterSeconds));
  res.writeHead(status, headers);
  res.end(body);
}

/**
 * Why forwarding to a target failed, independent of undici's error classes: passive health,
 * retries and metrics branch on this. Refused/DNS failures happen before any byte was sent, so a
 * retry on another target is always safe; timeouts and resets may not be.
 */
export type ErrorClass =
  | "connect_refused"
  | "connect_timeout"
  | "reset"
  | "headers_timeout"
  | "body_timeout"
  | "dns"
  | "aborted"
  | "other";

// Keyed by the stable `code`s of undici (lib/core/errors.js) and Node's system errors, never by
// class or message, which change between versions.
const classByCode: Readonly<Record<string, ErrorClass>> = {
  ECONNREFUSED: "connect_refused",
  EHOSTUNREACH: "connect_refused",
  ENETUNREACH: "connect_refused",
  EHOSTDOWN: "connect_refused",
  EADDRNOTAVAIL: "connect_refused",
  UND_ERR_CONNECT_TIMEOUT: "connect_timeout",
  ETIMEDOUT: "connect_timeout",
  UND_ERR_HEADERS_TIMEOUT: "headers_timeout",
  UND_ERR_BODY_TIMEOUT: "body_timeout",
  UND_ERR_SOCKET: "reset",
  // Undici closing a connection under a queued or pipelined request ("reset", "socket idle timeout").
  UND_ERR_INFO: "reset",
  ECONNRESET: "reset",
  EPIPE: "reset",
  ECONNABORTED: "reset",
  ENOTFOUND: "dns",
  EAI_AGAIN: "dns",
  EAI_FAIL: "dns",
  EAI_NONAME: "dns",
  EAI_NODATA: "dns",
  UND_ERR_ABORTED: "aborted",
  ABORT_ERR: "aborted",
};

/**
 * Classifies a forwarding error by its stable `code`, walking `cause` chains (and the first of an
 * AggregateError's `errors`, which Node's happy-eyeballs connect produces) the way connect-node's
 * node-error.ts does, so wrapped errors classify like the originals.
 */
export function classifyError(err: unknown): ErrorClass {
  let e: unknown = err;
  // Bounded: a cause chain can be cyclic.
  for (let depth = 0; depth < 8 && typeof e === "object" && e !== null; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string") {
      const cls = classByCode[code];
      if (cls !== undefined) return cls;
    }
    if ((e as { name?: unknown }).name === "AbortError") return "aborted";
    const cause = (e as { cause?: unknown }).cause;
    if (cause !== undefined) {
      e = cause;
      continue;
    }
    const errors = (e as { errors?: unknown }).errors;
    e = Array.isArray(errors) ? errors[0] : undefined;
  }
  return "other";
}

/**
 * Status for a failed forward. Timeouts are 504 and other target failures 502 (RFC 9110
 * §15.6.3/§15.6.5). A client that went away gets 499 (nginx's "client closed request"): nothing is
 * sent to it, but logs and passive health must not count it as a target failure.
 */
export function statusForErrorClass(cls: ErrorClass): number {
  switch (cls) {
    case "connect_timeout":
    case "headers_timeout":
    case "body_timeout":
      return 504;
    case "aborted":
      return 499;
    default:
      return 502;
  }
}

/** The error code a failed forward is reported with, consistent with statusForErrorClass. */
export function errorCodeForErrorClass(cls: ErrorClass): ErrorCode {
  return statusForErrorClass(cls) === 504 ? "upstream_timeout" : "upstream_unavailable";
}

/** Human-readable message per class; never the raw error text, which can leak internal addresses. */
export function messageForErrorClass(cls: ErrorClass): string {
  switch (cls) {
    case "connect_refused":
      return "the upstream target refused the connection";
    case "connect_timeout":
      return "timed out connecting to the upstream target";
    case "headers_timeout":
      return "the upstream target did not answer in time";
    case "body_timeout":
      return "the upstream target stopped sending its response";
    case "reset":
      return "the upstream target closed the connection";
    case "dns":
      return "the upstream target's address could not be resolved";
    case "aborted":
      return "the request was aborted";
    default:
      return "the upstream target could not be reached";
  }
}

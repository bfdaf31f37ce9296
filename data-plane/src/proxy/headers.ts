import { isAcceptableRequestId } from "./request-id.js";

/**
 * Header rewriting between the client and the target, done on Node's flat `rawHeaders` and
 * undici's raw header buffers: `req.headers` is built lazily and would cost an object (and a
 * lower-cased copy of every name) per request, and undici's parsed form costs the same again.
 * Names are compared case-insensitively by char code, without lower-cased copies.
 */

/**
 * Which Host header the target receives (APISIX's `pass_host`): the client's own ("pass"),
 * the target's host:port ("node", what a target behind a name-based virtual host usually needs),
 * or a fixed value from the upstream's config ("rewrite").
 */
export type PassHost = "pass" | "node" | "rewrite";

/** What the upstream request head is built from; all of it is known before forwarding starts. */
export interface UpstreamHeaderOptions {
  /** Socket address of the client, appended to X-Forwarded-For. */
  readonly clientAddr: string;
  /** Sent as X-Request-Id unless the client sent one (then that one is kept). */
  readonly requestId: string;
  readonly passHost: PassHost;
  /** Host header value for passHost "rewrite"; ignored otherwise. */
  readonly rewriteHost?: string;
}

/** The upstream request head, plus what was learnt about the body while scanning the headers. */
export interface UpstreamHead {
  /**
   * Flat [name, value, ...] list for undici's `headers`. Holds "host" unless the pool's own
   * (target host:port, precomputed by undici per pool) should be sent.
   */
  readonly headers: string[];
  /**
   * Whether the client announced a body (Content-Length > 0 or Transfer-Encoding). Without one the
   * request is sent with no body at all, so undici neither waits on the stream nor sends an empty
   * chunked body to the target.
   */
  readonly hasBody: boolean;
}

// Kinds of request header names that are not simply copied.
const PASS = 0;
const DROP = 1;
const CONNECTION = 2;
const TE = 3;
const HOST = 4;
const XFF = 5;
const XFP = 6;
const XFH = 7;
const XRID = 8;
const CONTENT_LENGTH = 9;
const TRANSFER_ENCODING = 10;

/**
 * True when `name` equals `lower` (an all-lower-case ASCII literal) ignoring ASCII case. No copy:
 * this runs for most header names of every request.
 */
export function equalsIgnoreCase(name: string, lower: string): boolean {
  const n = lower.length;
  if (name.length !== n) return false;
  for (let i = 0; i < n; i++) {
    let c = name.charCodeAt(i);
    if (c >= 65 && c <= 90) c |= 0x20;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/** Byte-wise equalsIgnoreCase for undici's header name buffers, to skip converting dropped ones. */
function bytesEqualIgnoreCase(name: Uint8Array, lower: string): boolean {
  const n = lower.length;
  if (name.length !== n) return false;
  for (let i = 0; i < n; i++) {
    let c = name[i];
    if (c >= 65 && c <= 90) c |= 0x20;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

// Dispatch on length first: most names (user-agent, accept, cookie, ...) are rejected by one
// integer compare and at most one char-code loop.
function requestHeaderKind(name: string): number {
  switch (name.length) {
    case 2:
      return equalsIgnoreCase(name, "te") ? TE : PASS;
    case 4:
      return equalsIgnoreCase(name, "host") ? HOST : PASS;
    case 6:
      // Node's server already answered "100 Continue" (or the client gave up waiting), and undici
      // refuses to send Expect over HTTP/1.1.
      return equalsIgnoreCase(name, "expect") ? DROP : PASS;
    case 7:
      return equalsIgnoreCase(name, "upgrade") || equalsIgnoreCase(name, "trailer") ? DROP : PASS;
    case 10:
      if (equalsIgnoreCase(name, "connection")) return CONNECTION;
      return equalsIgnoreCase(name, "keep-alive") ? DROP : PASS;
    case 12:
      return equalsIgnoreCase(name, "x-request-id") ? XRID : PASS;
    case 14:
      return equalsIgnoreCase(name, "content-length") ? CONTENT_LENGTH : PASS;
    case 15:
      return equalsIgnoreCase(name, "x-forwarded-for") ? XFF : PASS;
    case 16:
      if (equalsIgnoreCase(name, "x-forwarded-host")) return XFH;
      return equalsIgnoreCase(name, "proxy-connection") ? DROP : PASS;
    case 17:
      if (equalsIgnoreCase(name, "x-forwarded-proto")) return XFP;
      return equalsIgnoreCase(name, "transfer-encoding") ? TRANSFER_ENCODING : PASS;
    default:
      return PASS;
  }
}

function isResponseHopByHop(name: Uint8Array): boolean {
  switch (name.length) {
    case 2:
      return bytesEqualIgnoreCase(name, "te");
    case 7:
      return bytesEqualIgnoreCase(name, "upgrade") || bytesEqualIgnoreCase(name, "trailer");
    case 10:
      return bytesEqualIgnoreCase(name, "connection") || bytesEqualIgnoreCase(name, "keep-alive");
    case 16:
      return bytesEqualIgnoreCase(name, "proxy-connection");
    case 17:
      return bytesEqualIgnoreCase(name, "transfer-encoding");
    default:
      return false;
  }
}

/**
 * Extra hop-by-hop names a Connection header lists (RFC 9110 §7.6.1), lower-cased; undefined for
 * the usual "keep-alive" / "close", so the common case allocates nothing.
 */
export function connectionOptions(value: string): string[] | undefined {
  if (equalsIgnoreCase(value, "keep-alive") || equalsIgnoreCase(value, "close")) return undefined;
  let names: string[] | undefined;
  for (const part of value.split(",")) {
    const token = part.trim().toLowerCase();
    if (token === "" || token === "close" || token === "keep-alive") continue;
    (names ??= []).push(token);
  }
  return names;
}

/** Removes every pair whose name is in `names` (lower-case) from a flat header list, in place. */
function removeNamed(flat: string[], names: readonly string[]): void {
  let w = 0;
  for (let r = 0; r < flat.length; r += 2) {
    if (!names.includes(flat[r].toLowerCase())) {
      flat[w++] = flat[r];
      flat[w++] = flat[r + 1];
    }
  }
  flat.length = w;
}

// Only "trailers" is worth forwarding from TE: it says the client accepts trailers (gRPC needs it).
function teAllowsTrailers(value: string): boolean {
  return equalsIgnoreCase(value, "trailers") || value.toLowerCase().includes("trailers");
}

/**
 * Builds the target's request headers from the client's rawHeaders in one pass: drops the hop-by-hop
 * set of RFC 9110 §7.6.1 (Connection and what it names, Keep-Alive, Proxy-Connection, TE unless it
 * is "trailers", Transfer-Encoding, Upgrade) plus Trailer (we do not relay trailers) and Expect;
 * appends the client to X-Forwarded-For; keeps X-Forwarded-Proto / X-Forwarded-Host when a proxy
 * in front already set them, else sets "http" and the client's Host; keeps an incoming
 * X-Request-Id when acceptable (the rule requestIdOf uses), else sets ours; sets Host per
 * `passHost`. Other headers keep their order and case.
 *
 * For https targets undici derives TLS SNI (and the name the certificate is checked against) from
 * the Host sent, as APISIX does with pass_host: "pass" and "rewrite" therefore present the client's
 * or the configured host, "node" the target's.
 */
export function buildUpstreamHeaders(
  rawHeaders: readonly string[],
  opts: UpstreamHeaderOptions,
): UpstreamHead {
  const out: string[] = [];
  let host: string | undefined;
  let xff: string | undefined;
  let xfp: string | undefined;
  let xfh: string | undefined;
  let hasRequestId = false;
  let hasBody = false;
  let named: string[] | undefined;

  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i];
    const value = rawHeaders[i + 1];
    switch (requestHeaderKind(name)) {
      case PASS:
        out.push(name, value);
        break;
      case DROP:
        break;
      case CONNECTION: {
        const extra = connectionOptions(value);
        if (extra !== undefined) named = named === undefined ? extra : named.concat(extra);
        break;
      }
      case TE:
        if (teAllowsTrailers(value)) out.push("te", "trailers");
        break;
      case HOST:
        // Only the first Host counts (Node's req.headers does the same).
        if (host === undefined) host = value;
        break;
      case XFF:
        xff = xff === undefined ? value : xff + ", " + value;
        break;
      case XFP:
        if (xfp === undefined) xfp = value;
        break;
      case XFH:
        if (xfh === undefined) xfh = value;
        break;
      case XRID:
        if (!hasRequestId && isAcceptableRequestId(value)) {
          hasRequestId = true;
          out.push(name, value);
        }
        break;
      case CONTENT_LENGTH:
        if (value !== "0") hasBody = true;
        out.push(name, value);
        break;
      case TRANSFER_ENCODING:
        // The body is re-framed by undici (chunked when its length is unknown).
        hasBody = true;
        break;
    }
  }

  if (named !== undefined) removeNamed(out, named);

  const upstreamHost =
    opts.passHost === "pass" ? host : opts.passHost === "rewrite" ? opts.rewriteHost : undefined;
  if (upstreamHost !== undefined && upstreamHost !== "") out.push("host", upstreamHost);

  out.push(
    "x-forwarded-for",
    xff === undefined ? opts.clientAddr : xff + ", " + opts.clientAddr,
    "x-forwarded-proto",
    xfp === undefined ? "http" : xfp,
  );
  if (xfh !== undefined) out.push("x-forwarded-host", xfh);
  else if (host !== undefined) out.push("x-forwarded-host", host);
  if (!hasRequestId) out.push("x-request-id", opts.requestId);

  return { headers: out, hasBody };
}

/**
 * Converts undici's raw response header buffers into the flat string list `res.writeHead` takes,
 * without the hop-by-hop fields (and Trailer: trailers are not relayed), so our connection with
 * the client keeps its own framing and keep-alive. Values are latin1 as on the wire; dropped
 * fields are recognised on the bytes and never converted.
 */
export function filterResponseHeaders(raw: readonly Buffer[]): string[] {
  const out: string[] = [];
  let named: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (isResponseHopByHop(name)) {
      if (bytesEqualIgnoreCase(name, "connection")) {
        const extra = connectionOptions(raw[i + 1].toString("latin1"));
        if (extra !== undefined) named = named === undefined ? extra : named.concat(extra);
      }
      continue;
    }
    out.push(name.toString("latin1"), raw[i + 1].toString("latin1"));
  }
  if (named !== undefined) removeNamed(out, named);
  return out;
}

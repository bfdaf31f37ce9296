/**
 * The RequestView the proxy builds for every request, over node's IncomingMessage (or the HTTP/2
 * compatibility request, which has the same shape).
 *
 * Construction only stores two references: most requests are routed without any split expression
 * reading them, so nothing is parsed until an expression asks, and what is parsed (query string,
 * cookies, client address, country) is parsed once and kept for the other expressions.
 *
 * Headers are read from `rawHeaders`, never from `req.headers`: node builds that object lazily on
 * first access, at about a microsecond for a dozen headers, which is more than all the split
 * expressions of a rule cost together; the proxy itself never builds it either (see
 * ../proxy/headers.ts). A split rule reads a handful of headers, and scanning the raw list for each
 * is cheaper than building the object once.
 */
import type { CountryDb } from "./geo.js";
import { clientIp, type CidrSet } from "./ip.js";
import { claimAt, type JwtClaims } from "./jwt.js";
import type { RequestView } from "./request-view.js";

/** What the view reads of a request: satisfied by http.IncomingMessage and http2.Http2ServerRequest. */
export interface IncomingRequestLike {
  readonly method?: string;
  readonly url?: string;
  readonly rawHeaders: readonly string[];
  readonly socket: { readonly remoteAddress?: string } | null;
}

/**
 * Per-snapshot settings the views share; built once with the snapshot so that a view costs one
 * small object per request.
 */
export interface RequestViewEnv {
  /** Proxies whose X-Forwarded-For is believed (see clientIp). None: the socket peer is the client. */
  readonly trustedProxies?: CidrSet;
  /** Country database for geo_country. None: geo_country is always missing. */
  readonly geo?: CountryDb;
}

const NO_ENV: RequestViewEnv = {};

/** scanQuery's answer when the query string needs URLSearchParams' decoding. */
const NEEDS_DECODING = Symbol("needs decoding");
/** Marks a lazily computed field that may legitimately be undefined as not computed yet. */
const UNSET = Symbol("unset");

/** A RequestView over an incoming HTTP request; lazy and caching. */
export class IncomingRequestView implements RequestView {
  private claims: JwtClaims | undefined = undefined;
  private hostValue: string | undefined = undefined;
  /** Index in uri where the query string starts (after "?"); -1: none; -2: not looked up yet. */
  private queryStart = -2;
  /** Full parse, only for query strings the scan cannot read as is (see query()). */
  private params: URLSearchParams | undefined = undefined;
  private cookieHeader: string | null | undefined = undefined; // null: no Cookie header
  private address: string | undefined = undefined;
  private country: string | undefined | typeof UNSET = UNSET;

  constructor(
    private readonly req: IncomingRequestLike,
    private readonly env: RequestViewEnv = NO_ENV,
  ) {}

  /**
   * Claims of the request's token once the proxy verified it (verification is async, expressions
   * are not). Until then, or without a valid token, every jwt_ variable is missing.
   */
  setJwtClaims(claims: JwtClaims | undefined): void {
    this.claims = claims;
  }

  get method(): string {
    return this.req.method ?? "GET";
  }

  get uri(): string {
    return this.req.url ?? "/";
  }

  get host(): string {
    if (this.hostValue === undefined) {
      const raw = this.req.rawHeaders;
      this.hostValue = hostWithoutPort(firstRawHeader(raw, "host") ?? firstRawHeader(raw, ":authority") ?? "");
    }
    return this.hostValue;
  }

  /** The first value of the header as sent (a repeated header is not joined); `name` is lower case. */
  header(name: string): string | undefined {
    return firstRawHeader(this.req.rawHeaders, name);
  }

  /**
   * As URLSearchParams.get on the query string, without building it: a split rule asks for one or
   * two parameters, and scanning for them costs a fraction of a full parse. Query strings the scan
   * cannot read as is (a key or the wanted value with '%' or '+', which need decoding) are parsed
   * with URLSearchParams once, and that parse answers from then on.
   */
  query(name: string): string | undefined {
    if (this.params !== undefined) return this.params.get(name) ?? undefined;
    const uri = this.uri;
    if (this.queryStart === -2) {
      const q = uri.indexOf("?");
      this.queryStart = q < 0 || q === uri.length - 1 ? -1 : q + 1;
    }
    if (this.queryStart < 0) return undefined;
    const found = scanQuery(uri, this.queryStart, name);
    if (found !== NEEDS_DECODING) return found;
    this.params = new URLSearchParams(uri.slice(this.queryStart));
    return this.params.get(name) ?? undefined;
  }

  /**
   * The cookie's value, found by scanning the Cookie header (several joined with "; ", as node
   * does; read once) rather than parsing all of it.
   */
  cookie(name: string): string | undefined {
    if (this.cookieHeader === undefined) this.cookieHeader = joinedRawHeader(this.req.rawHeaders, "cookie", "; ") ?? null;
    return this.cookieHeader === null ? undefined : findCookie(this.cookieHeader, name);
  }

  jwtClaim(path: string): unknown {
    return claimAt(this.claims, path);
  }

  remoteAddr(): string {
    if (this.address === undefined) {
      // Several X-Forwarded-For lines form one list, in order (node joins them with ", " too).
      const xff = joinedRawHeader(this.req.rawHeaders, "x-forwarded-for", ", ");
      this.address = clientIp(this.req.socket?.remoteAddress, xff, this.env.trustedProxies);
    }
    return this.address;
  }

  geoCountry(): string | undefined {
    if (this.country === UNSET) {
      const geo = this.env.geo;
      const addr = this.remoteAddr();
      this.country = geo === undefined || addr.length === 0 ? undefined : geo.country(addr);
    }
    return this.country;
  }
}

/** "Example.COM:8080" → "example.com"; "[::1]:8080" → "[::1]" (brackets kept, as hosts are written in URLs). */
function hostWithoutPort(host: string): string {
  let end = host.length;
  if (host.charCodeAt(0) === 91 /* [ */) {
    const close = host.indexOf("]");
    if (close > 0) end = close + 1;
  } else {
    const colon = host.indexOf(":");
    if (colon >= 0) end = colon;
  }
  return (end === host.length ? host : host.slice(0, end)).toLowerCase();
}

function firstRawHeader(raw: readonly string[], lowerName: string): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (equalsLowerAscii(raw[i], lowerName)) return raw[i + 1];
  }
  return undefined;
}

/** Every value of a repeated header joined with `separator`, in order; undefined when absent. */
function joinedRawHeader(raw: readonly string[], lowerName: string, separator: string): string | undefined {
  let joined: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (equalsLowerAscii(raw[i], lowerName)) joined = joined === undefined ? raw[i + 1] : joined + separator + raw[i + 1];
  }
  return joined;
}

function equalsLowerAscii(candidate: string, lower: string): boolean {
  if (candidate.length !== lower.length) return false;
  if (candidate === lower) return true; // HTTP/2 names, and HTTP/1 clients that send lower case
  for (let i = 0; i < lower.length; i++) {
    let c = candidate.charCodeAt(i);
    if (c >= 65 && c <= 90) c += 32;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * URLSearchParams(qs.slice(from)).get(name) for the common case, by a scan that allocates only the
 * answer: `&`-separated pairs, the first `=` splitting key and value, the first pair with the key
 * winning.
 * Returns NEEDS_DECODING, and the caller parses fully, when a key before the match (or the match's
 * value) holds '%' or '+' (percent-decoding and '+' as space could make it equal `name` or change
 * it), or the string starts with '?' (which URLSearchParams skips).
 */
function scanQuery(qs: string, from: number, name: string): string | undefined | typeof NEEDS_DECODING {
  if (qs.charCodeAt(from) === 63 /* ? */) return NEEDS_DECODING;
  const n = qs.length;
  let start = from;
  while (start < n) {
    let end = qs.indexOf("&", start);
    if (end < 0) end = n;
    if (end > start) {
      let eq = qs.indexOf("=", start);
      if (eq < 0 || eq > end) eq = end;
      if (needsDecoding(qs, start, eq)) return NEEDS_DECODING;
      if (eq - start === name.length && qs.startsWith(name, start)) {
        const valueStart = eq < end ? eq + 1 : end;
        return needsDecoding(qs, valueStart, end) ? NEEDS_DECODING : qs.slice(valueStart, end);
      }
    }
    start = end + 1;
  }
  return undefined;
}

function needsDecoding(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c === 37 /* % */ || c === 43 /* + */) return true;
  }
  return false;
}

/** ECMAScript WhiteSpace and LineTerminator: what String.prototype.trim removes. */
function isTrimmed(c: number): boolean {
  if (c <= 32) return c === 32 || (c >= 9 && c <= 13);
  if (c < 0xa0) return false;
  return c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

/**
 * One cookie from a Cookie header, first occurrence winning (the most specific path comes first,
 * RFC 6265 §5.4). Names and values are trimmed; values are kept as sent (no percent-decoding), like
 * nginx's $cookie_<name> that APISIX configs are written against; surrounding double quotes are
 * removed. Scans in place: only the answer is allocated.
 */
function findCookie(header: string, name: string): string | undefined {
  if (name.length === 0) return undefined;
  const n = header.length;
  let start = 0;
  while (start < n) {
    let end = header.indexOf(";", start);
    if (end < 0) end = n;
    const eq = header.indexOf("=", start);
    if (eq > start && eq < end) {
      let ns = start;
      let ne = eq;
      while (ns < ne && isTrimmed(header.charCodeAt(ns))) ns++;
      while (ne > ns && isTrimmed(header.charCodeAt(ne - 1))) ne--;
      if (ne - ns === name.length && header.startsWith(name, ns)) {
        let vs = eq + 1;
        let ve = end;
        while (vs < ve && isTrimmed(header.charCodeAt(vs))) vs++;
        while (ve > vs && isTrimmed(header.charCodeAt(ve - 1))) ve--;
        if (ve - vs >= 2 && header.charCodeAt(vs) === 34 && header.charCodeAt(ve - 1) === 34) {
          vs++;
          ve--;
        }
        return header.slice(vs, ve);
      }
    }
    start = end + 1;
  }
  return undefined;
}

/**
 * The RequestView the proxy builds for every request, over node's IncomingMessage (or the HTTP/2
 * compatibility request, which has the same shape).
 *
 * Construction only stores two references: most requests are routed without any split expression
 * reading them, so nothing is parsed until an expression asks, and what is parsed (query string,
 * cookies, client address, country) is parsed once and kept for the other expressions.
 */
import type { IncomingHttpHeaders } from "node:http";
import type { CountryDb } from "./geo.js";
import { clientIp, type CidrSet } from "./ip.js";
import { claimAt, type JwtClaims } from "./jwt.js";
import type { RequestView } from "./request-view.js";

/** What the view reads of a request: satisfied by http.IncomingMessage and http2.Http2ServerRequest. */
export interface IncomingRequestLike {
  readonly method?: string;
  readonly url?: string;
  readonly headers: IncomingHttpHeaders;
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
/** Marks a lazily computed field that may legitimately be undefined as not computed yet. */
const UNSET = Symbol("unset");

/** A RequestView over an incoming HTTP request; lazy and caching. */
export class IncomingRequestView implements RequestView {
  private claims: JwtClaims | undefined = undefined;
  private hostValue: string | undefined = undefined;
  private params: URLSearchParams | null | undefined = undefined; // null: no query string
  private cookies: Map<string, string> | undefined = undefined;
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
    if (this.hostValue === undefined) this.hostValue = hostWithoutPort(this.req.headers.host ?? authority(this.req.headers));
    return this.hostValue;
  }

  header(name: string): string | undefined {
    const value = this.req.headers[name];
    if (value === undefined) return undefined;
    if (typeof value !== "string") return value[0];
    // node joins repeated headers with ", ". Only a value with a comma can be a join, and only
    // then is it worth finding the first occurrence among the raw headers.
    if (value.indexOf(",") < 0) return value;
    return firstRawHeader(this.req.rawHeaders, name) ?? value;
  }

  query(name: string): string | undefined {
    if (this.params === undefined) {
      const uri = this.uri;
      const q = uri.indexOf("?");
      this.params = q < 0 || q === uri.length - 1 ? null : new URLSearchParams(uri.slice(q + 1));
    }
    return this.params === null ? undefined : (this.params.get(name) ?? undefined);
  }

  cookie(name: string): string | undefined {
    if (this.cookies === undefined) this.cookies = parseCookies(this.req.headers.cookie);
    return this.cookies.get(name);
  }

  jwtClaim(path: string): unknown {
    return claimAt(this.claims, path);
  }

  remoteAddr(): string {
    if (this.address === undefined) {
      const xff = this.req.headers["x-forwarded-for"];
      this.address = clientIp(this.req.socket?.remoteAddress, typeof xff === "string" ? xff : xff?.join(", "), this.env.trustedProxies);
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

function authority(headers: IncomingHttpHeaders): string {
  const value = headers[":authority"];
  return typeof value === "string" ? value : "";
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

function equalsLowerAscii(candidate: string, lower: string): boolean {
  if (candidate.length !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    let c = candidate.charCodeAt(i);
    if (c >= 65 && c <= 90) c += 32;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * Cookie pairs by name, first occurrence winning (the most specific path comes first, RFC 6265
 * §5.4). Values are kept as sent (no percent-decoding), like nginx's $cookie_<name> that APISIX
 * configs are written against; surrounding double quotes are removed.
 */
function parseCookies(header: string | undefined): Map<string, string> {
  const cookies = new Map<string, string>();
  if (header === undefined) return cookies;
  let start = 0;
  while (start < header.length) {
    let end = header.indexOf(";", start);
    if (end < 0) end = header.length;
    const eq = header.indexOf("=", start);
    if (eq > start && eq < end) {
      const name = header.slice(start, eq).trim();
      let value = header.slice(eq + 1, end).trim();
      if (value.length >= 2 && value.charCodeAt(0) === 34 && value.charCodeAt(value.length - 1) === 34) value = value.slice(1, -1);
      if (name.length > 0 && !cookies.has(name)) cookies.set(name, value);
    }
    start = end + 1;
  }
  return cookies;
}

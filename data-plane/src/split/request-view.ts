/**
 * What split expressions may read of a request. The proxy builds one per request and parses
 * lazily (query, cookies and JWT only when an expression asks), caching what it parsed.
 */
export interface RequestView {
  /** Request method, upper case. */
  readonly method: string;
  /** Path with query string, as received. */
  readonly uri: string;
  /** Host header without port. */
  readonly host: string;
  /** Header value by lower-case name (first value if repeated); undefined when absent. */
  header(name: string): string | undefined;
  /** Query parameter by name (first value); undefined when absent. */
  query(name: string): string | undefined;
  /** Cookie by name; undefined when absent. */
  cookie(name: string): string | undefined;
  /**
   * Claim by dotted path from the request's JWT, only when its signature and expiry verified with the
   * tenant's keys; undefined otherwise. Verification is async, so the proxy resolves it before
   * evaluating expressions that need it (see CompiledMatch.needsJwt).
   */
  jwtClaim(path: string): unknown;
  /** Client address (socket address, or from X-Forwarded-For past trusted proxies). */
  remoteAddr(): string;
  /** ISO country code of the client address, when a country database is configured. */
  geoCountry(): string | undefined;
}

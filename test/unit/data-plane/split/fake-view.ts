import { claimAt, type JwtClaims } from "../../../../data-plane/src/split/jwt.js";
import type { RequestView } from "../../../../data-plane/src/split/request-view.js";

/** What a test request carries; anything left out is missing. */
export interface FakeRequest {
  method?: string;
  uri?: string;
  host?: string;
  headers?: Record<string, string>;
  query?: Record<string, string>;
  cookies?: Record<string, string>;
  claims?: JwtClaims;
  remoteAddr?: string;
  country?: string;
}

/** A RequestView from plain data, so expression tests state the request they mean and nothing else. */
export function fakeView(r: FakeRequest = {}): RequestView {
  const headers = new Map(Object.entries(r.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  return {
    method: r.method ?? "GET",
    uri: r.uri ?? "/",
    host: r.host ?? "example.com",
    header: (name) => headers.get(name),
    query: (name) => r.query?.[name],
    cookie: (name) => r.cookies?.[name],
    jwtClaim: (path) => claimAt(r.claims, path),
    remoteAddr: () => r.remoteAddr ?? "203.0.113.9",
    geoCountry: () => r.country,
  };
}

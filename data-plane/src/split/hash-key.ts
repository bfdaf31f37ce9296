import type { HashOn } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import type { RequestView } from "./request-view.js";

/**
 * The request's key for consistent hashing and sticky splits, per `hash_on`. Undefined when the
 * request lacks it (no such header, cookie or claim): callers then fall back to their non-sticky
 * choice, so anonymous traffic still flows.
 */
export function hashKeyOf(hashOn: HashOn, view: RequestView): string | undefined {
  switch (hashOn.source) {
    case "header":
      return view.header(hashOn.name.toLowerCase());
    case "cookie":
      return view.cookie(hashOn.name);
    case "query":
      return view.query(hashOn.name);
    case "client_ip":
      return view.remoteAddr();
    case "jwt_claim": {
      const v = view.jwtClaim(hashOn.name);
      if (v === undefined || v === null) return undefined;
      return typeof v === "string" ? v : JSON.stringify(v);
    }
    default:
      return undefined;
  }
}

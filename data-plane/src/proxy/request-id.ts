import { randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";

// A random prefix per process keeps ids unique across the fleet (many data planes, restarts)
// while the per-request part is only a counter: no crypto call and no entropy drain per request.
const prefix = randomBytes(8).readBigUInt64BE().toString(36).padStart(13, "0") + "-";
let counter = 0;

/**
 * Returns a fresh request id, unique per process and (by its random prefix) across processes.
 * Cheap enough to call on every request: one counter increment and one short string.
 */
export function newRequestId(): string {
  return prefix + (++counter).toString(36);
}

/** Longest incoming X-Request-Id we keep; longer ones are replaced so logs and headers stay bounded. */
export const MAX_REQUEST_ID_LENGTH = 200;

/** Whether an incoming X-Request-Id is kept (non-empty, bounded) rather than replaced by ours. */
export function isAcceptableRequestId(value: string): boolean {
  return value.length > 0 && value.length <= MAX_REQUEST_ID_LENGTH;
}

/**
 * The id a request is known by: the client's (or a front proxy's) X-Request-Id when acceptable,
 * else a new one. Use it for forward() and for error responses so the client, the target and our
 * logs all see the same id (buildUpstreamHeaders keeps the same incoming id by the same rule).
 * Reads rawHeaders because `req.headers` is built lazily and costs an object per request.
 */
export function requestIdOf(req: IncomingMessage): string {
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    // Length and first letter reject nearly every other name before the string compare.
    if (name.length === 12 && (name.charCodeAt(0) | 0x20) === 0x78 && name.toLowerCase() === "x-request-id") {
      const value = raw[i + 1];
      return isAcceptableRequestId(value) ? value : newRequestId();
    }
  }
  return newRequestId();
}

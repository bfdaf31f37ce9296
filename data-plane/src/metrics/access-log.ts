import type { IncomingMessage } from "node:http";
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import type { RequestObserver } from "../proxy/handler.js";

/**
 * The access log: one structured (pino JSON) line per request, at a configured level, off by
 * default (`--access-log LEVEL`): serialising a line costs more than routing the request, and most
 * deployments already log at their load balancer. Fields: request_id (the X-Request-Id forwarded to
 * the target and returned in error bodies), method, path (without the query string, which often
 * carries secrets), rule, backend, target, status, duration_ms, attempts, and error when an attempt
 * failed.
 */

/** Levels the access log can be written at; "off" disables it. */
export const ACCESS_LOG_LEVELS = ["off", "trace", "debug", "info", "warn"] as const;
export type AccessLogLevel = (typeof ACCESS_LOG_LEVELS)[number];

/** A RequestObserver that writes the access log line, or undefined when off (or below the logger's level). */
export function accessLogger(log: Logger, level: AccessLogLevel): RequestObserver | undefined {
  if (level === "off" || !log.isLevelEnabled(level)) return undefined;
  const write = log[level].bind(log);
  return (req: IncomingMessage, requestId, route, backend, target, status, attempts, startMs, errorClass) => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    write(
      {
        request_id: requestId,
        method: req.method,
        path: q === -1 ? url : url.slice(0, q),
        rule: route?.ruleId ?? null,
        backend: backend?.id ?? null,
        target: target?.key ?? null,
        status,
        duration_ms: Math.round((performance.now() - startMs) * 1000) / 1000,
        attempts,
        error: errorClass ?? null,
      },
      "request",
    );
  };
}

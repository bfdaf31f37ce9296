import http from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { errors } from "undici";
import {
  classifyError,
  errorCodeForErrorClass,
  sendError,
  statusForErrorClass,
  type ErrorClass,
} from "../../../../data-plane/src/proxy/errors.js";
import { closeAll, request, startTarget } from "./harness.js";

afterEach(closeAll);

function sysError(code: string): Error {
  return Object.assign(new Error(`connect ${code} 10.0.0.1:80`), { code });
}

describe("classifyError", () => {
  it.each<[string, unknown, ErrorClass]>([
    ["refused", sysError("ECONNREFUSED"), "connect_refused"],
    ["host unreachable", sysError("EHOSTUNREACH"), "connect_refused"],
    ["undici connect timeout", new errors.ConnectTimeoutError(), "connect_timeout"],
    ["undici headers timeout", new errors.HeadersTimeoutError(), "headers_timeout"],
    ["undici body timeout", new errors.BodyTimeoutError(), "body_timeout"],
    ["undici socket error", new errors.SocketError("other side closed"), "reset"],
    ["reset", sysError("ECONNRESET"), "reset"],
    ["broken pipe", sysError("EPIPE"), "reset"],
    ["dns not found", sysError("ENOTFOUND"), "dns"],
    ["dns try again", sysError("EAI_AGAIN"), "dns"],
    ["undici aborted", new errors.RequestAbortedError(), "aborted"],
    ["DOM AbortError", new DOMException("stop", "AbortError"), "aborted"],
    ["wrapped in cause", new TypeError("fetch failed", { cause: sysError("ENOTFOUND") }), "dns"],
    [
      "deeply wrapped",
      new Error("a", { cause: new Error("b", { cause: new errors.HeadersTimeoutError() }) }),
      "headers_timeout",
    ],
    ["happy-eyeballs AggregateError", new AggregateError([sysError("ECONNREFUSED"), sysError("ECONNREFUSED")]), "connect_refused"],
    ["unknown code", sysError("ERR_SOMETHING"), "other"],
    ["tls", sysError("DEPTH_ZERO_SELF_SIGNED_CERT"), "other"],
    ["plain error", new Error("boom"), "other"],
    ["not an error", "ECONNREFUSED", "other"],
    ["undefined", undefined, "other"],
  ])("%s → %s", (_name, err, want) => {
    expect(classifyError(err)).toBe(want);
  });

  it("terminates on a cyclic cause chain", () => {
    const a = new Error("a");
    const b = new Error("b", { cause: a });
    (a as { cause?: unknown }).cause = b;
    expect(classifyError(a)).toBe("other");
  });
});

describe("status and code per class", () => {
  it.each<[ErrorClass, number, string]>([
    ["connect_refused", 502, "upstream_unavailable"],
    ["reset", 502, "upstream_unavailable"],
    ["dns", 502, "upstream_unavailable"],
    ["other", 502, "upstream_unavailable"],
    ["connect_timeout", 504, "upstream_timeout"],
    ["headers_timeout", 504, "upstream_timeout"],
    ["body_timeout", 504, "upstream_timeout"],
    ["aborted", 499, "upstream_unavailable"],
  ])("%s → %i %s", (cls, status, code) => {
    expect(statusForErrorClass(cls)).toBe(status);
    expect(errorCodeForErrorClass(cls)).toBe(code);
  });
});

describe("sendError", () => {
  it.each([
    [404, "no_route", "no rule matches"],
    [503, "no_healthy_target", "every target is down"],
    [503, "no_config", "no configuration yet"],
  ])("writes %i %s as JSON with the request id", async (status, code, message) => {
    const server = await startTarget((_req, res) => sendError(res, status, code, message, "rid-9"));
    const res = await request(server.port, {});
    expect(res.status).toBe(status);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(res.headers["x-request-id"]).toBe("rid-9");
    expect(Number(res.headers["content-length"])).toBe(res.body.length);
    expect(JSON.parse(res.body.toString())).toEqual({ error: { code, message, request_id: "rid-9" } });
  });

  it("adds Allow to a 405 and escapes what it embeds", async () => {
    const server = await startTarget((_req, res) =>
      sendError(res, 405, "method_not_allowed", 'method "TRACE" is not allowed', "rid-\u00e9", { allow: ["GET", "POST"] }),
    );
    const res = await request(server.port, { method: "TRACE" });
    expect(res.status).toBe(405);
    expect(res.headers.allow).toBe("GET, POST");
    expect(JSON.parse(res.body.toString()).error.message).toBe('method "TRACE" is not allowed');
  });

  it("destroys the connection when the response already started", async () => {
    const server = await startTarget((_req, res) => {
      res.writeHead(200, { "content-length": "10" });
      res.write("part");
      sendError(res, 502, "upstream_unavailable", "cut", "rid");
    });
    await expect(request(server.port, {})).rejects.toThrow();
  });

  it("is a no-op on a closed response", () => {
    const res = new http.ServerResponse(new http.IncomingMessage(null as never));
    res.destroy();
    expect(() => sendError(res, 502, "upstream_unavailable", "gone", "rid")).not.toThrow();
  });
});

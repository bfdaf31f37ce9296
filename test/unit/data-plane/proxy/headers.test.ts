import { describe, expect, it } from "vitest";
import {
  buildUpstreamHeaders,
  connectionOptions,
  equalsIgnoreCase,
  filterResponseHeaders,
  type UpstreamHeaderOptions,
} from "../../../../data-plane/src/proxy/headers.js";

const base: UpstreamHeaderOptions = { clientAddr: "192.0.2.7", requestId: "rid-1", passHost: "pass" };

function pairs(flat: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}

function names(flat: readonly string[]): string[] {
  return pairs(flat).map(([n]) => n.toLowerCase());
}

describe("equalsIgnoreCase", () => {
  it.each([
    ["Connection", "connection", true],
    ["CONNECTION", "connection", true],
    ["connection", "connection", true],
    ["Connectiom", "connection", false],
    ["Connection ", "connection", false],
    ["conn", "connection", false],
  ])("%j vs %j → %s", (name, lower, want) => {
    expect(equalsIgnoreCase(name, lower)).toBe(want);
  });
});

describe("connectionOptions", () => {
  it.each([
    ["keep-alive", undefined],
    ["Close", undefined],
    ["close, X-Foo", ["x-foo"]],
    ["Upgrade, HTTP2-Settings", ["upgrade", "http2-settings"]],
    [" keep-alive ,  x-a,,x-b ", ["x-a", "x-b"]],
  ])("%j → %j", (value, want) => {
    expect(connectionOptions(value)).toEqual(want);
  });
});

describe("buildUpstreamHeaders", () => {
  it.each<[string, string[], Partial<UpstreamHeaderOptions>, [string, string][], boolean]>([
    [
      "copies end-to-end headers in order and case, adds forwarding headers",
      ["Host", "a.test", "User-Agent", "curl/8", "Accept", "*/*"],
      {},
      [
        ["User-Agent", "curl/8"],
        ["Accept", "*/*"],
        ["host", "a.test"],
        ["x-forwarded-for", "192.0.2.7"],
        ["x-forwarded-proto", "http"],
        ["x-forwarded-host", "a.test"],
        ["x-request-id", "rid-1"],
      ],
      false,
    ],
    [
      "drops the RFC 9110 hop-by-hop set, Trailer and Expect",
      [
        "Host", "a.test",
        "Connection", "keep-alive",
        "Keep-Alive", "timeout=5",
        "Proxy-Connection", "keep-alive",
        "Transfer-Encoding", "chunked",
        "TE", "gzip",
        "Trailer", "x-sum",
        "Upgrade", "websocket",
        "Expect", "100-continue",
      ],
      { passHost: "node" },
      [
        ["x-forwarded-for", "192.0.2.7"],
        ["x-forwarded-proto", "http"],
        ["x-forwarded-host", "a.test"],
        ["x-request-id", "rid-1"],
      ],
      true,
    ],
    [
      "drops headers the Connection header names, wherever they appear",
      ["X-Secret", "1", "Connection", "close, x-secret, X-Other", "x-other", "2", "X-Keep", "3"],
      { passHost: "node" },
      [
        ["X-Keep", "3"],
        ["x-forwarded-for", "192.0.2.7"],
        ["x-forwarded-proto", "http"],
        ["x-request-id", "rid-1"],
      ],
      false,
    ],
    [
      "keeps TE only as trailers",
      ["te", "trailers, deflate;q=0.5"],
      { passHost: "node" },
      [
        ["te", "trailers"],
        ["x-forwarded-for", "192.0.2.7"],
        ["x-forwarded-proto", "http"],
        ["x-request-id", "rid-1"],
      ],
      false,
    ],
    [
      "appends to every X-Forwarded-For line, keeps proto, host and request id",
      [
        "host", "a.test",
        "X-Forwarded-For", "1.1.1.1",
        "x-forwarded-for", "2.2.2.2, 3.3.3.3",
        "X-Forwarded-Proto", "https",
        "X-Forwarded-Host", "front.test",
        "X-Request-Id", "abc",
        "x-request-id", "second",
      ],
      { passHost: "rewrite", rewriteHost: "b.internal" },
      [
        ["X-Request-Id", "abc"],
        ["host", "b.internal"],
        ["x-forwarded-for", "1.1.1.1, 2.2.2.2, 3.3.3.3, 192.0.2.7"],
        ["x-forwarded-proto", "https"],
        ["x-forwarded-host", "front.test"],
      ],
      false,
    ],
    [
      "replaces an oversized incoming request id",
      ["x-request-id", "x".repeat(201)],
      { passHost: "node" },
      [
        ["x-forwarded-for", "192.0.2.7"],
        ["x-forwarded-proto", "http"],
        ["x-request-id", "rid-1"],
      ],
      false,
    ],
    [
      "passes a positive Content-Length and notes the body",
      ["Content-Length", "12", "Content-Type", "text/plain"],
      { passHost: "node" },
      [
        ["Content-Length", "12"],
        ["Content-Type", "text/plain"],
        ["x-forwarded-for", "192.0.2.7"],
        ["x-forwarded-proto", "http"],
        ["x-request-id", "rid-1"],
      ],
      true,
    ],
    [
      "Content-Length 0 is no body",
      ["content-length", "0"],
      { passHost: "node" },
      [
        ["content-length", "0"],
        ["x-forwarded-for", "192.0.2.7"],
        ["x-forwarded-proto", "http"],
        ["x-request-id", "rid-1"],
      ],
      false,
    ],
    [
      "only the first Host counts",
      ["Host", "first.test", "Host", "second.test"],
      {},
      [
        ["host", "first.test"],
        ["x-forwarded-for", "192.0.2.7"],
        ["x-forwarded-proto", "http"],
        ["x-forwarded-host", "first.test"],
        ["x-request-id", "rid-1"],
      ],
      false,
    ],
  ])("%s", (_name, raw, opts, want, hasBody) => {
    const head = buildUpstreamHeaders(raw, { ...base, ...opts });
    expect(pairs(head.headers)).toEqual(want);
    expect(head.hasBody).toBe(hasBody);
  });

  it("leaves Host to the pool (target host:port) for pass_host node", () => {
    const head = buildUpstreamHeaders(["Host", "a.test"], { ...base, passHost: "node" });
    expect(names(head.headers)).not.toContain("host");
  });
});

describe("filterResponseHeaders", () => {
  const raw = (flat: string[]) => flat.map((s) => Buffer.from(s, "latin1"));

  it("drops hop-by-hop fields and the ones Connection names, keeps the rest as latin1 strings", () => {
    const out = filterResponseHeaders(
      raw([
        "Content-Type", "text/plain",
        "Connection", "keep-alive, X-Internal",
        "Keep-Alive", "timeout=5",
        "Transfer-Encoding", "chunked",
        "X-Internal", "1",
        "Proxy-Connection", "close",
        "Upgrade", "h2c",
        "TE", "trailers",
        "Trailer", "x-sum",
        "Set-Cookie", "a=1",
        "set-cookie", "b=2",
        "X-Latin1", "caf\u00e9",
      ]),
    );
    expect(pairs(out)).toEqual([
      ["Content-Type", "text/plain"],
      ["Set-Cookie", "a=1"],
      ["set-cookie", "b=2"],
      ["X-Latin1", "caf\u00e9"],
    ]);
  });

  it("returns an empty list for no headers", () => {
    expect(filterResponseHeaders([])).toEqual([]);
  });
});

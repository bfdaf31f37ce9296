import { createServer, request, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import type { CountryDb } from "../../../../data-plane/src/split/geo.js";
import { IncomingRequestView, type IncomingRequestLike } from "../../../../data-plane/src/split/incoming-request-view.js";
import { CidrSet } from "../../../../data-plane/src/split/ip.js";

function requestLike(opts: { url?: string; method?: string; raw?: string[]; remote?: string }): IncomingRequestLike {
  const raw = opts.raw ?? [];
  const headers: IncomingHttpHeaders = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    const prev = headers[name];
    // node's rules, as far as these tests need them: cookies joined with "; ", others with ", "
    headers[name] = prev === undefined ? raw[i + 1] : `${prev}${name === "cookie" ? "; " : ", "}${raw[i + 1]}`;
  }
  return { url: opts.url ?? "/", method: opts.method ?? "GET", headers, rawHeaders: raw, socket: { remoteAddress: opts.remote ?? "198.51.100.7" } };
}

describe("IncomingRequestView", () => {
  it("exposes method and uri as received", () => {
    const v = new IncomingRequestView(requestLike({ method: "POST", url: "/a/b?x=1" }));
    expect(v.method).toBe("POST");
    expect(v.uri).toBe("/a/b?x=1");
  });

  it.each([
    ["Example.COM:8080", "example.com"],
    ["example.com", "example.com"],
    ["[::1]:8080", "[::1]"],
    ["[2001:DB8::1]", "[2001:db8::1]"],
    ["10.0.0.1:80", "10.0.0.1"],
  ])("host %s → %s", (host, expected) => {
    expect(new IncomingRequestView(requestLike({ raw: ["Host", host] })).host).toBe(expected);
  });

  it("falls back to :authority for HTTP/2", () => {
    const req = requestLike({ raw: [":authority", "api.example.com:443"] });
    expect(new IncomingRequestView(req).host).toBe("api.example.com");
  });

  it("reads headers by lower-case name, first value when repeated", () => {
    const v = new IncomingRequestView(requestLike({ raw: ["X-Canary", "true", "X-List", "a, b", "X-Dup", "one", "x-dup", "two"] }));
    expect(v.header("x-canary")).toBe("true");
    expect(v.header("x-list")).toBe("a, b"); // a single header with a comma is kept whole
    expect(v.header("x-dup")).toBe("one");
    expect(v.header("x-missing")).toBeUndefined();
  });

  it("parses the query string lazily, first value, decoded", () => {
    const v = new IncomingRequestView(requestLike({ url: "/p?name=jack&name=rose&q=a+b%20c&flag&empty=" }));
    expect(v.query("name")).toBe("jack");
    expect(v.query("q")).toBe("a b c");
    expect(v.query("flag")).toBe("");
    expect(v.query("empty")).toBe("");
    expect(v.query("missing")).toBeUndefined();
    expect(new IncomingRequestView(requestLike({ url: "/p" })).query("name")).toBeUndefined();
    expect(new IncomingRequestView(requestLike({ url: "/p?" })).query("name")).toBeUndefined();
  });

  it("parses cookies: first occurrence wins, quotes removed, values raw", () => {
    const v = new IncomingRequestView(requestLike({ raw: ["Cookie", 'variant=b; session="abc=="; pct=a%20b', "Cookie", "variant=c; last=1"] }));
    expect(v.cookie("variant")).toBe("b");
    expect(v.cookie("session")).toBe("abc==");
    expect(v.cookie("pct")).toBe("a%20b");
    expect(v.cookie("last")).toBe("1");
    expect(v.cookie("missing")).toBeUndefined();
    expect(new IncomingRequestView(requestLike({})).cookie("variant")).toBeUndefined();
  });

  it("gives jwt claims only after the proxy set them", () => {
    const v = new IncomingRequestView(requestLike({}));
    expect(v.jwtClaim("sub")).toBeUndefined();
    v.setJwtClaims({ sub: "alice", realm_access: { roles: ["beta"] } });
    expect(v.jwtClaim("sub")).toBe("alice");
    expect(v.jwtClaim("realm_access.roles")).toEqual(["beta"]);
  });

  it("uses the socket address unless trusted proxies vouch for X-Forwarded-For", () => {
    const raw = ["X-Forwarded-For", "6.6.6.6, 1.1.1.1"];
    expect(new IncomingRequestView(requestLike({ raw, remote: "::ffff:10.0.0.2" })).remoteAddr()).toBe("10.0.0.2");
    const env = { trustedProxies: CidrSet.parse(["10.0.0.0/8"], "trusted_proxies") };
    expect(new IncomingRequestView(requestLike({ raw, remote: "::ffff:10.0.0.2" }), env).remoteAddr()).toBe("1.1.1.1");
    expect(new IncomingRequestView(requestLike({ raw, remote: "198.51.100.1" }), env).remoteAddr()).toBe("198.51.100.1");
    const noSocket = { ...requestLike({}), socket: null };
    expect(new IncomingRequestView(noSocket).remoteAddr()).toBe("");
  });

  it("looks up the country of the client address once", () => {
    const lookups: string[] = [];
    const geo: CountryDb = {
      country(ip) {
        lookups.push(ip);
        return ip === "1.1.1.1" ? "AU" : undefined;
      },
    };
    const env = { trustedProxies: CidrSet.parse(["10.0.0.0/8"], "t"), geo };
    const v = new IncomingRequestView(requestLike({ raw: ["X-Forwarded-For", "1.1.1.1"], remote: "10.0.0.1" }), env);
    expect(v.geoCountry()).toBe("AU");
    expect(v.geoCountry()).toBe("AU");
    expect(lookups).toEqual(["1.1.1.1"]);
    const other = new IncomingRequestView(requestLike({ remote: "198.51.100.1" }), env);
    expect(other.geoCountry()).toBeUndefined();
    expect(other.geoCountry()).toBeUndefined();
    expect(lookups).toEqual(["1.1.1.1", "198.51.100.1"]);
    expect(new IncomingRequestView(requestLike({})).geoCountry()).toBeUndefined();
  });

  it("reads nothing of the request when constructed", () => {
    const touched: string[] = [];
    const req = new Proxy(requestLike({ raw: ["Cookie", "a=1"], url: "/?x=1" }), {
      get(target, prop, receiver) {
        touched.push(String(prop));
        return Reflect.get(target, prop, receiver);
      },
    });
    const v = new IncomingRequestView(req);
    expect(touched).toEqual([]);
    v.cookie("a");
    v.cookie("b");
    expect(touched.filter((p) => p === "rawHeaders")).toHaveLength(1); // parsed once, then cached
    expect(touched).not.toContain("headers"); // node builds req.headers lazily, at a cost: never asked for
  });
});

describe("IncomingRequestView over a real IncomingMessage", () => {
  it("sees what node's HTTP server parsed", async () => {
    let seen: Record<string, unknown> = {};
    const server = createServer((req: IncomingMessage, res) => {
      const v = new IncomingRequestView(req);
      seen = {
        method: v.method,
        uri: v.uri,
        host: v.host,
        canary: v.header("x-canary"),
        version: v.header("x-version"),
        arg: v.query("use_canary"),
        cookie: v.cookie("variant"),
        remote: v.remoteAddr(),
      };
      res.end("ok");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    try {
      await new Promise<void>((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port, method: "PUT", path: "/api/items?use_canary=true", agent: false }, (res) => {
          res.resume();
          res.on("end", resolve);
        });
        req.setHeader("Host", "Api.Example.com:8443");
        req.setHeader("X-Canary", ["first", "second"]); // two header lines
        req.setHeader("X-Version", "v2");
        req.setHeader("Cookie", "variant=b");
        req.on("error", reject);
        req.end();
      });
    } finally {
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    }
    expect(seen).toEqual({
      method: "PUT",
      uri: "/api/items?use_canary=true",
      host: "api.example.com",
      canary: "first",
      version: "v2",
      arg: "true",
      cookie: "b",
      remote: "127.0.0.1",
    });
  });
});

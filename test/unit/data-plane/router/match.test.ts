import { describe, expect, it } from "vitest";
import { MethodNotAllowed, RouteConflictError, Router, stripLength, type RouteSpec } from "../../../../data-plane/src/router/match.js";

function r(name: string, path: string, methods: string[] = [], hosts: string[] = []): RouteSpec {
  return { name, path, methods, hosts };
}

const routes = [
  r("api", "/api/*"),
  r("api-v1", "/api/v1/*"),
  r("api-v1-exact", "/api/v1/health"),
  r("root", "/*", ["GET"]),
  r("items-get", "/items/*", ["GET", "HEAD"]),
  r("items-post", "/items/*", ["POST"]),
  r("orders-post", "/orders", ["POST"]),
  r("host-exact", "/api/*", [], ["shop.example.com"]),
  r("host-wild", "/api/*", [], ["*.example.com"]),
  r("nosl", "/pre*"),
];
const router = new Router(routes);

function name(host: string, method: string, url: string): string {
  const m = router.match(host, method, url);
  if (m === undefined) return "404";
  if (m instanceof MethodNotAllowed) return `405 ${m.allow}`;
  return m.name;
}

describe("Router.match", () => {
  it.each([
    // [host, method, url, expected]
    ["", "GET", "/api/x", "api"],
    ["", "GET", "/api", "api"], // "/api/*" also serves "/api"
    ["", "GET", "/api/", "api"],
    ["", "GET", "/api/v1", "api-v1"],
    ["", "GET", "/api/v1/users?x=1", "api-v1"],
    ["", "GET", "/api/v1/health", "api-v1-exact"], // exact beats prefix
    ["", "GET", "/api/v1/health/x", "api-v1"],
    ["", "GET", "/apix", "root"], // "/api/*" does not match "/apix"
    ["", "GET", "/", "root"],
    ["", "POST", "/", "405 GET"],
    ["", "GET", "/items/3", "items-get"],
    ["", "HEAD", "/items/3", "items-get"],
    ["", "POST", "/items/3", "items-post"],
    ["", "DELETE", "/items/3", "405 GET, HEAD, POST"],
    ["", "POST", "/orders", "orders-post"],
    ["", "GET", "/orders", "root"], // falls back to a shorter prefix that allows the method
    ["", "POST", "/orders/1", "405 GET"],
    ["shop.example.com", "GET", "/api/x", "host-exact"],
    ["eu.example.com", "GET", "/api/x", "host-wild"],
    ["a.b.example.com", "GET", "/api/x", "api"], // wildcard covers one label only
    ["example.com", "GET", "/api/x", "api"],
    ["shop.example.com", "GET", "/other", "root"], // host level without a path match falls through
    ["", "GET", "/prefix", "nosl"],
    ["", "GET", "/pre", "nosl"],
  ])("%s %s %s → %s", (host, method, url, expected) => {
    expect(name(host, method, url)).toBe(expected);
  });

  it("without any rule answers 404", () => {
    expect(new Router([]).match("", "GET", "/")).toBeUndefined();
  });

  it("knows whether hosts matter", () => {
    expect(router.usesHosts).toBe(true);
    expect(new Router([r("a", "/a")]).usesHosts).toBe(false);
  });
});

describe("Router conflicts", () => {
  it.each([
    ["same path, no methods", [r("a", "/x/*"), r("b", "/x/*")]],
    ["same path, overlapping method", [r("a", "/x", ["GET", "POST"]), r("b", "/x", ["POST"])]],
    ["catch-all beside a method rule", [r("a", "/x", ["GET"]), r("b", "/x")]],
    ["method rule beside a catch-all", [r("a", "/x"), r("b", "/x", ["GET"])]],
    ["same host", [r("a", "/x", [], ["h.io"]), r("b", "/x", [], ["h.io"])]],
  ])("%s is refused", (_label, list) => {
    expect(() => new Router(list)).toThrow(RouteConflictError);
    try {
      new Router(list);
    } catch (err) {
      expect((err as RouteConflictError).existing.name).toBe("a");
      expect((err as RouteConflictError).incoming.name).toBe("b");
    }
  });

  it.each([
    ["disjoint methods", [r("a", "/x", ["GET"]), r("b", "/x", ["POST"])]],
    ["different hosts", [r("a", "/x", [], ["a.io"]), r("b", "/x", [], ["b.io"])]],
    ["exact and prefix", [r("a", "/x"), r("b", "/x*")]],
    ["host and any host", [r("a", "/x", [], ["a.io"]), r("b", "/x")]],
  ])("%s coexist", (_label, list) => {
    expect(() => new Router(list)).not.toThrow();
  });
});

describe("stripLength", () => {
  it.each([
    ["/api/*", 4],
    ["/api*", 4],
    ["/*", 0],
    ["/exact", 6],
  ])("%s strips %i characters", (path, n) => {
    expect(stripLength(path)).toBe(n);
  });
});

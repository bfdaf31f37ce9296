import http from "node:http";
import net from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { create } from "@bufbuild/protobuf";
import { ActiveHealthCheckSchema } from "../../../../proto/gen/gateway/v1/upstream_pb.js";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import {
  ActiveProber,
  resolveActiveCheck,
  type ProbeDetail,
  type ProbeState,
  type ProbeTarget,
  type ResolvedActiveCheck,
} from "../../../../data-plane/src/health/active.js";

// Waits are event-driven; the cap only turns a hang into a readable failure.
const CAP_MS = 10_000;

interface TestServer {
  port: number;
  /** Requests seen, and responses sent per status. */
  requests: number;
  statuses: Map<number, number>;
  /** Requests open at once (arrived, not yet answered or aborted), and the maximum observed. */
  open: number;
  maxOpen: number;
  /** TCP connections currently open to the server. */
  connections: number;
  close(): Promise<void>;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** An HTTP server on 127.0.0.1:0 whose answer is decided per request by `respond` (undefined = never answer). */
async function startHttp(
  respond: (req: http.IncomingMessage) => { status: number; delayMs?: number } | undefined,
  options: { keepAliveTimeoutMs?: number } = {},
): Promise<TestServer> {
  const s: TestServer = {
    port: 0,
    requests: 0,
    statuses: new Map(),
    open: 0,
    maxOpen: 0,
    connections: 0,
    close: async () => {},
  };
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    s.requests++;
    s.open++;
    s.maxOpen = Math.max(s.maxOpen, s.open);
    let done = false;
    const finish = (): void => {
      if (!done) {
        done = true;
        s.open--;
      }
    };
    res.on("close", finish);
    const answer = respond(req);
    if (answer === undefined) return; // hang: only the client's abort ends this request
    const send = (): void => {
      s.statuses.set(answer.status, (s.statuses.get(answer.status) ?? 0) + 1);
      res.writeHead(answer.status, { "content-type": "text/plain" }).end("x");
    };
    if (answer.delayMs === undefined) send();
    else {
      const t = setTimeout(() => {
        timers.delete(t);
        send();
      }, answer.delayMs);
      timers.add(t);
    }
  });
  // undici honours the server's keep-alive hint; tests that watch connections set it long.
  if (options.keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = options.keepAliveTimeoutMs;
  server.on("connection", (sock) => {
    s.connections++;
    sock.on("close", () => s.connections--);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  s.port = (server.address() as net.AddressInfo).port;
  s.close = () =>
    new Promise<void>((resolve) => {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      server.close(() => resolve());
    });
  cleanups.push(() => s.close());
  return s;
}

function check(over: Partial<ResolvedActiveCheck> = {}): ResolvedActiveCheck {
  return {
    ...resolveActiveCheck(create(ActiveHealthCheckSchema, { intervalMs: 100, timeoutMs: 80, healthyThreshold: 2, unhealthyThreshold: 3 })),
    ...over,
  };
}

function target(key: string, port: number, over: Partial<ResolvedActiveCheck> = {}): ProbeTarget {
  return { key, host: "127.0.0.1", port, scheme: "http", check: check(over) };
}

function newProber(options?: ConstructorParameters<typeof ActiveProber>[0]): ActiveProber {
  const p = new ActiveProber(options);
  cleanups.push(() => p.close());
  return p;
}

/** Resolves with the detail of the next transition of `key` to `state`; must be called before it can happen. */
function nextChange(p: ActiveProber, key: string, state: ProbeState): Promise<ProbeDetail> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no transition of ${key} to ${state} within ${CAP_MS} ms (now ${p.state(key)})`));
    }, CAP_MS);
    const off = p.onChange((k, s, d) => {
      if (k === key && s === state) {
        clearTimeout(timer);
        off();
        resolve(d);
      }
    });
  });
}

/** Resolves once `cond` holds, polling on the event loop; for server-side counters that emit no event. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + CAP_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("resolveActiveCheck", () => {
  it("applies the documented defaults to an unset config", () => {
    const r = resolveActiveCheck();
    expect(r).toMatchObject({
      type: "http",
      path: "/",
      method: "GET",
      host: undefined,
      intervalMs: 5000,
      timeoutMs: 2000,
      healthyThreshold: 2,
      unhealthyThreshold: 3,
    });
    expect(r.expectedStatuses.has(199)).toBe(false);
    expect(r.expectedStatuses.has(200)).toBe(true);
    expect(r.expectedStatuses.has(399)).toBe(true);
    expect(r.expectedStatuses.has(400)).toBe(false);
  });

  it("keeps explicit values", () => {
    const r = resolveActiveCheck(
      create(ActiveHealthCheckSchema, {
        type: "tcp",
        path: "/healthz",
        method: "head",
        host: "svc.internal",
        expectedStatuses: [204],
        intervalMs: 1000,
        timeoutMs: 300,
        healthyThreshold: 1,
        unhealthyThreshold: 5,
      }),
    );
    expect(r).toMatchObject({ type: "tcp", path: "/healthz", method: "HEAD", host: "svc.internal", intervalMs: 1000, timeoutMs: 300 });
    expect([...r.expectedStatuses]).toEqual([204]);
  });

  const bad: [string, Record<string, unknown>, string][] = [
    ["type", { type: "udp" }, "health_check.active.type"],
    ["path without slash", { path: "healthz" }, "health_check.active.path"],
    ["path with space", { path: "/a b" }, "health_check.active.path"],
    ["method", { method: "CONNECT" }, "health_check.active.method"],
    ["host", { host: "a b" }, "health_check.active.host"],
    ["status below 100", { expectedStatuses: [200, 99] }, "health_check.active.expected_statuses[1]"],
    ["status above 599", { expectedStatuses: [600] }, "health_check.active.expected_statuses[0]"],
    ["interval below 100", { intervalMs: 99, timeoutMs: 50 }, "health_check.active.interval_ms"],
    ["timeout equal to interval", { intervalMs: 500, timeoutMs: 500 }, "health_check.active.timeout_ms"],
    ["default timeout above interval", { intervalMs: 1000 }, "health_check.active.timeout_ms"],
    ["interval too long", { intervalMs: 3_600_001 }, "health_check.active.interval_ms"],
  ];
  it.each(bad)("refuses %s naming the field", (_name, fields, field) => {
    const cfg = create(ActiveHealthCheckSchema, fields);
    expect(() => resolveActiveCheck(cfg)).toThrow(ConfigError);
    try {
      resolveActiveCheck(cfg);
    } catch (e) {
      expect((e as ConfigError).field).toBe(field);
    }
  });

  it("names the field under the given prefix", () => {
    const cfg = create(ActiveHealthCheckSchema, { intervalMs: 200, timeoutMs: 300 });
    expect(() => resolveActiveCheck(cfg, "upstreams[0].targets[2].active_check")).toThrow(
      "upstreams[0].targets[2].active_check.timeout_ms",
    );
  });
});

describe("ActiveProber over HTTP", () => {
  it("goes unhealthy after exactly unhealthy_threshold failures and healthy after healthy_threshold successes", async () => {
    let status = 200;
    const srv = await startHttp(() => ({ status }));
    const p = newProber();
    const healthy = nextChange(p, "a", "healthy");
    p.setTargets([target("a", srv.port)]);
    expect(p.state("a")).toBe("unknown");
    await healthy;

    const unhealthy = nextChange(p, "a", "unhealthy");
    status = 500;
    const d1 = await unhealthy;
    // One probe in flight per target and the next one starts only after this verdict, so the server
    // has answered exactly the probes the prober counted.
    expect(srv.statuses.get(500)).toBe(3);
    expect(d1).toMatchObject({ ok: false, reason: "status", status: 500, consecutive: 3 });

    const ok200 = srv.statuses.get(200)!;
    const back = nextChange(p, "a", "healthy");
    status = 200;
    const d2 = await back;
    expect(srv.statuses.get(200)! - ok200).toBe(2);
    expect(d2).toMatchObject({ ok: true, status: 200, consecutive: 2 });
    expect(p.state("a")).toBe("healthy");
  });

  it("uses method, path, Host header and expected statuses from the check", async () => {
    const seen: { method?: string; url?: string; host?: string }[] = [];
    const srv = await startHttp((req) => {
      seen.push({ method: req.method, url: req.url, host: req.headers.host });
      return { status: 418 };
    });
    const p = newProber();
    const healthy = nextChange(p, "a", "healthy");
    p.setTargets([target("a", srv.port, { method: "HEAD", path: "/healthz?deep=1", host: "svc.example", expectedStatuses: new Set([418]) })]);
    await healthy;
    expect(seen[0]).toEqual({ method: "HEAD", url: "/healthz?deep=1", host: "svc.example" });
  });

  it("counts a hanging target as failed after the timeout and never has two probes in flight to it", async () => {
    const srv = await startHttp(() => undefined);
    const p = newProber();
    const unhealthy = nextChange(p, "hang", "unhealthy");
    // Timeout above the interval, bypassing resolveActiveCheck on purpose: then only the scheduler,
    // not the config, can keep two probes to one target apart.
    p.setTargets([target("hang", srv.port, { intervalMs: 100, timeoutMs: 150, unhealthyThreshold: 2 })]);
    const d = await unhealthy;
    expect(d).toMatchObject({ ok: false, reason: "timeout", consecutive: 2 });
    // Keep probing a while longer: every probe must have been aborted before the next one arrived.
    await until(() => srv.requests >= 4, "more probes to the hanging server");
    expect(srv.maxOpen).toBe(1);
    expect(p.inFlight).toBeLessThanOrEqual(1);
  });

  it("respects the global concurrency bound with many targets", async () => {
    const srv = await startHttp(() => ({ status: 200, delayMs: 30 }));
    const p = newProber({ concurrency: 3 });
    const keys = Array.from({ length: 30 }, (_, i) => `t${i}`);
    const allHealthy = Promise.all(keys.map((k) => nextChange(p, k, "healthy")));
    p.setTargets(keys.map((k) => target(k, srv.port, { intervalMs: 200, timeoutMs: 150, path: `/${k}` })));
    await allHealthy;
    // Demand (30 targets × 30 ms per 200 ms) is above 3 slots, so the bound was actually tested.
    expect(srv.maxOpen).toBeLessThanOrEqual(3);
    expect(srv.requests).toBeGreaterThanOrEqual(30);
  });

  it("setTargets keeps the state of kept targets, starts new ones and stops removed ones", async () => {
    const up = await startHttp(() => ({ status: 200 }));
    const down = await startHttp(() => ({ status: 503 }));
    const p = newProber();
    const aHealthy = nextChange(p, "a", "healthy");
    const bUnhealthy = nextChange(p, "b", "unhealthy");
    p.setTargets([target("a", up.port), target("b", down.port)]);
    await Promise.all([aHealthy, bUnhealthy]);

    const changes: string[] = [];
    p.onChange((k, s) => changes.push(`${k}:${s}`));
    const cHealthy = nextChange(p, "c", "healthy");
    // Same endpoints, another interval: a config tweak must not reset verdicts.
    p.setTargets([target("a", up.port, { intervalMs: 120 }), target("b", down.port), target("c", up.port, { path: "/c" })]);
    expect(p.state("a")).toBe("healthy");
    expect(p.state("b")).toBe("unhealthy");
    expect(p.state("c")).toBe("unknown");
    await cHealthy;
    expect(changes).toEqual(["c:healthy"]);

    p.setTargets([target("a", up.port), target("c", up.port, { path: "/c" })]);
    expect(p.state("b")).toBeUndefined();
    const bRequests = down.requests;
    const aRequests = up.requests;
    await until(() => up.requests >= aRequests + 6, "more probes to the kept targets");
    // A probe already on the wire when b was removed may still land; no further one may.
    expect(down.requests - bRequests).toBeLessThanOrEqual(1);
  });

  it("resets the state when a key moves to another endpoint", async () => {
    const up = await startHttp(() => ({ status: 200 }));
    const down = await startHttp(() => ({ status: 500 }));
    const p = newProber();
    const healthy = nextChange(p, "a", "healthy");
    p.setTargets([target("a", up.port)]);
    await healthy;
    const reset = nextChange(p, "a", "unknown");
    const unhealthy = nextChange(p, "a", "unhealthy");
    p.setTargets([target("a", down.port)]);
    expect((await reset).reason).toBe("reset");
    await unhealthy;
  });
});

describe("ActiveProber over TCP", () => {
  it("is healthy on a listening port and unhealthy on a closed one", async () => {
    const listening = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => listening.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise<void>((r) => listening.close(() => r())));
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
    const closedPort = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));

    const p = newProber();
    const up = nextChange(p, "up", "healthy");
    const down = nextChange(p, "down", "unhealthy");
    p.setTargets([
      target("up", (listening.address() as net.AddressInfo).port, { type: "tcp" }),
      target("down", closedPort, { type: "tcp" }),
    ]);
    expect((await up).reason).toBe("connected");
    expect(await down).toMatchObject({ ok: false, reason: "error", code: "ECONNREFUSED", consecutive: 3 });
  });
});

describe("ActiveProber.close", () => {
  // Node marks a Timeout `_destroyed` once it has fired or been cleared; a ref'd one that is not is
  // still pending and would keep the event loop alive.
  function pending(t: unknown): boolean {
    const timer = t as NodeJS.Timeout & { _destroyed?: boolean };
    return timer._destroyed === false && timer.hasRef();
  }

  it("leaves no timer or socket behind, even with a probe in flight", async () => {
    const up = await startHttp(() => ({ status: 200 }), { keepAliveTimeoutMs: 60_000 });
    const hang = await startHttp(() => undefined);
    const spy = vi.spyOn(globalThis, "setTimeout");
    cleanups.push(() => spy.mockRestore());
    // A keep-alive far beyond the wait cap: only close() can end the idle probe connections in time.
    const p = new ActiveProber({ keepAliveTimeoutMs: 60_000, random: () => 0 });
    const healthy = nextChange(p, "a", "healthy");
    // The hanging probe's timeout is far beyond the cap: close() must abort it, not wait for it.
    p.setTargets([target("a", up.port), target("h", hang.port, { intervalMs: 60_000, timeoutMs: 30_000 })]);
    await healthy;
    await until(() => hang.open === 1 && up.connections > 0, "a probe hanging in flight and an idle connection");
    let cap: NodeJS.Timeout | undefined;
    await Promise.race([
      p.close(),
      new Promise((_, reject) => (cap = setTimeout(() => reject(new Error("close() waited for a hanging probe")), CAP_MS))),
    ]).finally(() => clearTimeout(cap));
    const timers = spy.mock.results.map((r) => r.value as unknown);
    spy.mockRestore();
    expect(timers.length).toBeGreaterThan(2);
    expect(timers.filter((t) => t !== cap).filter(pending)).toEqual([]);
    expect(p.inFlight).toBe(0);
    expect(p.state("a")).toBeUndefined();

    // No-op after close: must not start probing again.
    const spy2 = vi.spyOn(globalThis, "setTimeout");
    p.setTargets([target("a", up.port)]);
    const armed = spy2.mock.calls.length;
    spy2.mockRestore();
    expect(p.state("a")).toBeUndefined();
    expect(armed).toBe(0);

    // Sockets: the servers see every probe connection closed, the idle keep-alive one and the aborted one.
    await until(() => up.connections === 0 && hang.connections === 0 && hang.open === 0, "probe connections closed");
  });
});

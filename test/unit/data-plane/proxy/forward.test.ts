import http from "node:http";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { joinPath, type ForwardOutcome } from "../../../../data-plane/src/proxy/forward.js";
import {
  closeAll,
  deferred,
  freePort,
  headerMap,
  newPool,
  rawRequest,
  request,
  startHttpsTarget,
  startProxy,
  startRawTarget,
  startTarget,
  type Attempt,
} from "./harness.js";
import { PoolRegistry } from "../../../../data-plane/src/proxy/pools.js";

afterEach(closeAll);

interface Seen {
  method: string;
  url: string;
  rawHeaders: string[];
  body: Buffer;
}

/** A target that records each request and answers with a small JSON echo. */
async function echoTarget(answer?: (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void) {
  const seen: Seen[] = [];
  const target = await startTarget((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method ?? "", url: req.url ?? "", rawHeaders: req.rawHeaders, body });
      if (answer) return answer(req, res, body);
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ method: req.method, url: req.url, bytes: body.length }));
    });
  });
  return { target, seen };
}

function single(target: { origin: string }, extra?: Partial<Attempt>): () => Attempt[] {
  const pool = newPool(target.origin);
  return () => [{ target: { origin: target.origin, basePath: "" }, pool, ...extra }];
}

describe("joinPath", () => {
  it.each([
    ["", "/a?x=1", "/a?x=1"],
    ["/v2", "/users?x=1", "/v2/users?x=1"],
    ["/v2/", "/users", "/v2/users"],
    ["/v2", "/", "/v2/"],
    ["/v2", "?q=1", "/v2?q=1"],
    ["/v2", "users", "/v2/users"],
    ["/v2/", "users", "/v2/users"],
    ["/v2", "", "/v2"],
  ])("%j + %j = %j", (base, path, want) => {
    expect(joinPath(base, path)).toBe(want);
  });
});

describe("forward: methods, paths and bodies", () => {
  it.each(["GET", "DELETE", "POST", "PUT", "PATCH", "OPTIONS"])("%s passes through with its body", async (method) => {
    const { target, seen } = await echoTarget();
    const proxy = await startProxy(single(target));
    const body = method === "GET" || method === "DELETE" || method === "OPTIONS" ? undefined : `payload for ${method}`;
    const res = await request(proxy.port, { method, path: "/things/1?x=1&y=%20z", body });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString())).toEqual({ method, url: "/things/1?x=1&y=%20z", bytes: body?.length ?? 0 });
    expect(seen[0].body.toString()).toBe(body ?? "");
    expect(proxy.outcomes[0]).toMatchObject({ status: 200, responseStarted: true, errorClass: undefined });
  });

  it("HEAD gets the target's headers and no body", async () => {
    const target = await startTarget((_req, res) => {
      res.writeHead(200, { "content-length": "42", "x-from": "target" });
      res.end();
    });
    const proxy = await startProxy(single(target));
    const res = await request(proxy.port, { method: "HEAD" });
    expect(res.status).toBe(200);
    expect(res.headers["content-length"]).toBe("42");
    expect(res.headers["x-from"]).toBe("target");
    expect(res.body.length).toBe(0);
  });

  it("prepends the upstream's base path and keeps the query string", async () => {
    const { target, seen } = await echoTarget();
    const pool = newPool(target.origin);
    const proxy = await startProxy(() => [{ target: { origin: target.origin, basePath: "/api/v2" }, pool }]);
    await request(proxy.port, { path: "/users/7?fields=a,b&x=%2F" });
    expect(seen[0].url).toBe("/api/v2/users/7?fields=a,b&x=%2F");
  });

  it("streams a large request body to the target before the client has finished sending it", async () => {
    const firstBytes = deferred();
    let received = 0;
    const hash = createHash("sha256");
    const target = await startTarget((req, res) => {
      req.on("data", (c: Buffer) => {
        if (received === 0) firstBytes.resolve();
        received += c.length;
        hash.update(c);
      });
      req.on("end", () => res.end(JSON.stringify({ bytes: received, sha256: hash.digest("hex") })));
    });
    const proxy = await startProxy(single(target));

    const part = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < part.length; i++) part[i] = (i * 31) & 0xff;
    const expected = createHash("sha256").update(part).update(part).digest("hex");
    const done = new Promise<string>((resolve, reject) => {
      const req = http.request(
        { host: "127.0.0.1", port: proxy.port, method: "POST", path: "/upload", agent: false },
        (res) => {
          let text = "";
          res.on("data", (c: Buffer) => (text += c.toString()));
          res.on("end", () => resolve(text));
        },
      );
      req.on("error", reject);
      req.write(part);
      // The second half is only sent once the target has seen bytes of the first: a proxy that
      // buffered the whole body would never forward them, and this test would time out.
      void firstBytes.promise.then(() => req.end(part));
    });
    const answer = JSON.parse(await done) as { bytes: number; sha256: string };
    expect(answer).toEqual({ bytes: 2 * part.length, sha256: expected });
    expect(proxy.outcomes[0].requestBodyConsumed).toBe(true);
  }, 30_000);

  it("relays chunked and content-length responses with their framing", async () => {
    const target = await startTarget((req, res) => {
      if (req.url === "/chunked") {
        res.write("first,");
        res.write("second,");
        res.end("third");
      } else {
        res.setHeader("content-length", "5");
        res.end("fixed");
      }
    });
    const proxy = await startProxy(single(target));
    const chunked = await request(proxy.port, { path: "/chunked" });
    expect(chunked.body.toString()).toBe("first,second,third");
    expect(chunked.headers["transfer-encoding"]).toBe("chunked");
    expect(chunked.headers["content-length"]).toBeUndefined();
    const fixed = await request(proxy.port, { path: "/fixed" });
    expect(fixed.body.toString()).toBe("fixed");
    expect(fixed.headers["content-length"]).toBe("5");
    expect(fixed.headers["transfer-encoding"]).toBeUndefined();
  });

  it.each([204, 304])("relays %i without a body", async (status) => {
    const target = await startTarget((_req, res) => {
      res.writeHead(status, { etag: '"v1"' });
      res.end();
    });
    const proxy = await startProxy(single(target));
    const res = await request(proxy.port, { headers: { "if-none-match": '"v1"' } });
    expect(res.status).toBe(status);
    expect(res.headers.etag).toBe('"v1"');
    expect(res.body.length).toBe(0);
    expect(proxy.outcomes[0]).toMatchObject({ status, responseStarted: true, errorClass: undefined });
  });

  it("relays the target's status, repeated headers and their order", async () => {
    const target = await startTarget((_req, res) => {
      res.writeHead(201, "Made It", [
        ["set-cookie", "a=1"],
        ["X-Mixed-Case", "yes"],
        ["set-cookie", "b=2"],
      ]);
      res.end("ok");
    });
    const proxy = await startProxy(single(target));
    const res = await request(proxy.port, {});
    expect(res.status).toBe(201);
    expect(res.headers["set-cookie"]).toEqual(["a=1", "b=2"]);
    expect(res.rawHeaders).toContain("X-Mixed-Case");
  });
});

describe("forward: request headers", () => {
  it("removes hop-by-hop headers, including those Connection names, and keeps TE: trailers", async () => {
    const { target, seen } = await echoTarget();
    const proxy = await startProxy(single(target));
    const answer = await rawRequest(
      proxy.port,
      "GET /hop HTTP/1.1\r\n" +
        "Host: client.example.test\r\n" +
        "Connection: close, X-Hop-Custom\r\n" +
        "Keep-Alive: timeout=5\r\n" +
        "X-Hop-Custom: secret\r\n" +
        "Proxy-Connection: keep-alive\r\n" +
        "TE: trailers, deflate\r\n" +
        "Trailer: x-checksum\r\n" +
        "X-End-To-End: kept\r\n\r\n",
    );
    expect(answer).toMatch(/^HTTP\/1.1 200 /);
    const h = headerMap(seen[0].rawHeaders);
    expect(h.get("x-hop-custom")).toBeUndefined();
    expect(h.get("keep-alive")).toBeUndefined();
    expect(h.get("proxy-connection")).toBeUndefined();
    expect(h.get("trailer")).toBeUndefined();
    expect(h.get("te")).toEqual(["trailers"]);
    expect(h.get("x-end-to-end")).toEqual(["kept"]);
    // undici's own connection management, not the client's.
    expect(h.get("connection")).toEqual(["keep-alive"]);
  });

  it("sets X-Forwarded-For/Proto/Host, appending to a forwarded-for chain", async () => {
    const { target, seen } = await echoTarget();
    const proxy = await startProxy(single(target));
    await request(proxy.port, { headers: { host: "api.example.test" } });
    await request(proxy.port, {
      headers: { host: "api.example.test", "x-forwarded-for": "203.0.113.9, 10.0.0.1", "x-forwarded-proto": "https", "x-forwarded-host": "front.example.test" },
    });
    const first = headerMap(seen[0].rawHeaders);
    expect(first.get("x-forwarded-for")).toEqual(["127.0.0.1"]);
    expect(first.get("x-forwarded-proto")).toEqual(["http"]);
    expect(first.get("x-forwarded-host")).toEqual(["api.example.test"]);
    const second = headerMap(seen[1].rawHeaders);
    expect(second.get("x-forwarded-for")).toEqual(["203.0.113.9, 10.0.0.1, 127.0.0.1"]);
    expect(second.get("x-forwarded-proto")).toEqual(["https"]);
    expect(second.get("x-forwarded-host")).toEqual(["front.example.test"]);
  });

  it.each([
    ["pass", undefined, "client.example.test"],
    ["node", undefined, "TARGET"],
    ["rewrite", "backend.internal", "backend.internal"],
    // "rewrite" without a configured value degrades to the target's own host.
    ["rewrite", undefined, "TARGET"],
  ] as const)("Host with pass_host %s (%s)", async (passHost, hostHeader, want) => {
    const { target, seen } = await echoTarget();
    const pool = newPool(target.origin);
    const proxy = await startProxy(() => [{ target: { origin: target.origin, basePath: "", hostHeader }, pool, opts: { passHost } }]);
    await request(proxy.port, { headers: { host: "client.example.test" } });
    expect(headerMap(seen[0].rawHeaders).get("host")).toEqual([want === "TARGET" ? `127.0.0.1:${target.port}` : want]);
  });

  it("keeps an incoming X-Request-Id and generates one otherwise", async () => {
    const { target, seen } = await echoTarget();
    const proxy = await startProxy(single(target));
    await request(proxy.port, { headers: { "x-request-id": "from-client-123" } });
    await request(proxy.port, {});
    await request(proxy.port, {});
    expect(headerMap(seen[0].rawHeaders).get("x-request-id")).toEqual(["from-client-123"]);
    const a = headerMap(seen[1].rawHeaders).get("x-request-id");
    const b = headerMap(seen[2].rawHeaders).get("x-request-id");
    expect(a).toHaveLength(1);
    expect(a?.[0]).toMatch(/^[0-9a-z]+-[0-9a-z]+$/);
    expect(a).not.toEqual(b);
  });

  it("removes hop-by-hop headers from the target's response", async () => {
    const target = await startRawTarget((socket) => {
      socket.once("data", () => {
        socket.end(
          "HTTP/1.1 200 OK\r\n" +
            "Connection: keep-alive, X-Resp-Hop\r\n" +
            "Keep-Alive: timeout=5\r\n" +
            "X-Resp-Hop: internal\r\n" +
            "Proxy-Connection: keep-alive\r\n" +
            "Upgrade: h2c\r\n" +
            "X-Kept: yes\r\n" +
            "Content-Length: 2\r\n\r\nok",
        );
      });
    });
    const proxy = await startProxy(single(target));
    const res = await request(proxy.port, {});
    expect(res.body.toString()).toBe("ok");
    const h = headerMap(res.rawHeaders);
    expect(h.get("x-resp-hop")).toBeUndefined();
    expect(h.get("keep-alive")).toBeUndefined();
    expect(h.get("proxy-connection")).toBeUndefined();
    expect(h.get("upgrade")).toBeUndefined();
    expect(h.get("x-kept")).toEqual(["yes"]);
    // Node's own framing toward our client (it asked for close), not the target's.
    expect(h.get("connection")).toEqual(["close"]);
  });
});

describe("forward: streaming responses", () => {
  it("delivers each server-sent event as soon as the target writes it", async () => {
    const clientSawFirst = deferred();
    const clientSawHeaders = deferred();
    const target = await startTarget(async (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      res.flushHeaders();
      // Lock-step: nothing more is written until the client has seen the previous step, so a
      // buffering proxy deadlocks and the test fails.
      await clientSawHeaders.promise;
      res.write("data: one\n\n");
      await clientSawFirst.promise;
      res.end("data: two\n\n");
    });
    const proxy = await startProxy(single(target));
    const text = await new Promise<string>((resolve, reject) => {
      const req = http.get({ host: "127.0.0.1", port: proxy.port, path: "/events", agent: false }, (res) => {
        expect(res.headers["content-type"]).toBe("text/event-stream");
        clientSawHeaders.resolve();
        let all = "";
        res.on("data", (c: Buffer) => {
          all += c.toString();
          if (all.includes("data: one\n\n")) clientSawFirst.resolve();
        });
        res.on("end", () => resolve(all));
      });
      req.on("error", reject);
    });
    expect(text).toBe("data: one\n\ndata: two\n\n");
  }, 15_000);
});

describe("forward: response backpressure", () => {
  it("stops reading the target while the client does not read, and resumes when it does", async () => {
    const total = 64 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 1);
    let written = 0;
    const target = await startTarget(async (_req, res) => {
      res.writeHead(200, { "content-length": String(total) });
      while (written < total) {
        written += chunk.length;
        if (!res.write(chunk)) await new Promise((r) => res.once("drain", r));
      }
      res.end();
    });
    const proxy = await startProxy(single(target));
    const turn = () => new Promise((r) => setImmediate(r));

    const received = await new Promise<number>((resolve, reject) => {
      const req = http.get({ host: "127.0.0.1", port: proxy.port, agent: false }, async (res) => {
        res.pause();
        // With backpressure the target stalls for good once the socket buffers between it, the
        // proxy and us are full; a proxy that kept reading would let it write all of it.
        let stable = 0;
        let last = -1;
        while (stable < 200 && written < total) {
          stable = written === last ? stable + 1 : 0;
          last = written;
          await turn();
        }
        if (written >= total) {
          req.destroy();
          return reject(new Error("the target wrote everything while the client was not reading"));
        }
        let n = 0;
        res.on("data", (c: Buffer) => (n += c.length));
        res.on("end", () => resolve(n));
        res.resume();
      });
      req.on("error", reject);
    });
    expect(received).toBe(total);
  }, 30_000);
});

describe("forward: failures", () => {
  it("a client that disconnects aborts the upstream request", async () => {
    const targetClosed = deferred();
    const targetGotRequest = deferred();
    const target = await startTarget((req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("partial");
      targetGotRequest.resolve();
      res.on("close", () => targetClosed.resolve());
    });
    const proxy = await startProxy(single(target));
    const outcome = proxy.nextOutcome();
    const req = http.get({ host: "127.0.0.1", port: proxy.port, agent: false }, (res) => {
      res.once("data", () => req.destroy());
    });
    req.on("error", () => {});
    await targetGotRequest.promise;
    await targetClosed.promise;
    expect(await outcome).toMatchObject({ errorClass: "aborted", responseStarted: true, status: 200 });
  });

  it("a client that disconnects before the response aborts the upstream request too", async () => {
    const targetClosed = deferred();
    const targetGotRequest = deferred();
    const target = await startTarget((_req, res) => {
      targetGotRequest.resolve();
      res.on("close", () => targetClosed.resolve());
    });
    const proxy = await startProxy(single(target));
    const outcome = proxy.nextOutcome();
    const req = http.get({ host: "127.0.0.1", port: proxy.port, agent: false });
    req.on("error", () => {});
    await targetGotRequest.promise;
    req.destroy();
    await targetClosed.promise;
    expect(await outcome).toMatchObject({ errorClass: "aborted", responseStarted: false, status: 499 });
  });

  it("a client that disconnects while its request waits for a connection never reaches the target", async () => {
    const first = deferred();
    const release = deferred();
    const urls: string[] = [];
    const target = await startTarget(async (req, res) => {
      urls.push(req.url ?? "");
      first.resolve();
      await release.promise;
      res.end("done");
    });
    // One connection: the second request queues inside the pool behind the first.
    const pool = newPool(target.origin, { connections: 1 });
    const proxy = await startProxy(() => [{ target: { origin: target.origin, basePath: "" }, pool }]);
    const firstResponse = request(proxy.port, { path: "/first" });
    await first.promise;
    const queued = http.get({ host: "127.0.0.1", port: proxy.port, path: "/queued", agent: false });
    queued.on("error", () => {});
    // Wait until the proxy has the queued request, then disconnect.
    await new Promise<void>((resolve) => {
      const check = () => (pool.stats.queued > 0 ? resolve() : setImmediate(check));
      check();
    });
    queued.destroy();
    // The proxy has seen the disconnect once its side of that connection closed (only the first
    // request's connection is left); only then may the pool hand out its connection.
    await new Promise<void>((resolve) => {
      const check = () => (proxy.sockets.size === 1 ? resolve() : setImmediate(check));
      check();
    });
    release.resolve();
    expect((await firstResponse).body.toString()).toBe("done");
    // One more request shows the pool's connection is healthy and the queued one was never sent.
    expect((await request(proxy.port, { path: "/after" })).body.toString()).toBe("done");
    expect(urls).toEqual(["/first", "/after"]);
    const queuedOutcome = proxy.outcomes[proxy.outcomeUrls.indexOf("/queued")];
    expect(queuedOutcome).toMatchObject({ errorClass: "aborted", responseStarted: false, status: 499 });
  });

  it("handles Expect: 100-continue itself and forwards the body without Expect", async () => {
    const { target, seen } = await echoTarget();
    const proxy = await startProxy(single(target));
    const answer = await new Promise<string>((resolve, reject) => {
      const req = http.request(
        { host: "127.0.0.1", port: proxy.port, method: "POST", path: "/e", agent: false, headers: { expect: "100-continue", "content-length": "5" } },
        (res) => {
          let text = "";
          res.on("data", (c: Buffer) => (text += c.toString()));
          res.on("end", () => resolve(text));
        },
      );
      req.on("continue", () => req.end("hello"));
      req.on("error", reject);
    });
    expect(JSON.parse(answer)).toMatchObject({ bytes: 5 });
    expect(seen[0].body.toString()).toBe("hello");
    expect(headerMap(seen[0].rawHeaders).get("expect")).toBeUndefined();
  });

  it("a refused connection is classified, left to the caller, and answered 502 with the request id", async () => {
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    const proxy = await startProxy(single({ origin }));
    const res = await request(proxy.port, { headers: { "x-request-id": "req-refused-1" } });
    expect(proxy.outcomes[0]).toMatchObject({
      errorClass: "connect_refused",
      status: 502,
      responseStarted: false,
      requestBodyConsumed: false,
    });
    expect(res.status).toBe(502);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(res.headers["x-request-id"]).toBe("req-refused-1");
    expect(JSON.parse(res.body.toString())).toEqual({
      error: { code: "upstream_unavailable", message: expect.any(String), request_id: "req-refused-1" },
    });
  });

  it("a body is left unread when the connection is refused, so a retry streams all of it", async () => {
    const port = await freePort();
    const dead = newPool(`http://127.0.0.1:${port}`);
    const { target, seen } = await echoTarget();
    const live = newPool(target.origin);
    const proxy = await startProxy(() => [
      { target: { origin: `http://127.0.0.1:${port}`, basePath: "" }, pool: dead },
      { target: { origin: target.origin, basePath: "" }, pool: live },
    ]);
    const body = Buffer.alloc(256 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = i & 0xff;
    const res = await request(proxy.port, { method: "POST", body, headers: { "content-type": "application/octet-stream" } });
    expect(proxy.attemptOutcomes[0]).toMatchObject({
      errorClass: "connect_refused",
      responseStarted: false,
      requestBodyConsumed: false,
    });
    expect(res.status).toBe(200);
    expect(seen[0].body.equals(body)).toBe(true);
    expect(proxy.attemptOutcomes[1]).toMatchObject({ status: 200, requestBodyConsumed: true });
  });

  it("a target that does not answer in time gives 504 upstream_timeout", async () => {
    const target = await startTarget(() => {
      // Never answers; the proxy's headers timeout fires and closes the connection.
    });
    const proxy = await startProxy(single(target, { opts: { headersTimeoutMs: 100 } }));
    const res = await request(proxy.port, { headers: { "x-request-id": "slow-1" } });
    expect(res.status).toBe(504);
    expect(JSON.parse(res.body.toString()).error).toMatchObject({ code: "upstream_timeout", request_id: "slow-1" });
    expect(proxy.outcomes[0]).toMatchObject({ errorClass: "headers_timeout", responseStarted: false });
  });

  it("a response body that stalls is cut by the body timeout and the client connection destroyed", async () => {
    const target = await startTarget((_req, res) => {
      res.writeHead(200, { "content-length": "100" });
      res.write("only some");
    });
    const proxy = await startProxy(single(target, { opts: { bodyTimeoutMs: 100 } }));
    const err = await request(proxy.port, {}).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect(proxy.outcomes[0]).toMatchObject({ errorClass: "body_timeout", responseStarted: true, status: 200 });
  }, 15_000);

  it("a target that resets mid-response makes the proxy destroy the client connection", async () => {
    const target = await startRawTarget((socket) => {
      socket.once("data", () => {
        socket.write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
        setImmediate(() => socket.resetAndDestroy());
      });
    });
    const proxy = await startProxy(single(target));
    const seenPartial = deferred();
    const clientError = await new Promise<unknown>((resolve) => {
      const req = http.get({ host: "127.0.0.1", port: proxy.port, agent: false }, (res) => {
        res.once("data", () => seenPartial.resolve());
        res.on("error", resolve);
        res.on("end", () => resolve(undefined));
      });
      req.on("error", resolve);
    });
    await seenPartial.promise;
    expect(clientError).toBeInstanceOf(Error);
    expect(proxy.outcomes[0]).toMatchObject({ errorClass: "reset", responseStarted: true, status: 200 });
  }, 15_000);

  it("a signal aborts the attempt", async () => {
    const targetGotRequest = deferred();
    const targetClosed = deferred();
    const target = await startTarget((_req, res) => {
      targetGotRequest.resolve();
      res.on("close", () => targetClosed.resolve());
    });
    const ac = new AbortController();
    const proxy = await startProxy(single(target, { opts: { signal: ac.signal } }));
    const pending = request(proxy.port, {});
    await targetGotRequest.promise;
    ac.abort();
    await targetClosed.promise;
    const res = await pending;
    expect(proxy.outcomes[0]).toMatchObject({ errorClass: "aborted", responseStarted: false });
    expect(res.status).toBe(499);
  });
});

describe("forward: https targets", () => {
  const fixtures = new URL("./fixtures/", import.meta.url);
  // Test-only self-signed certificate for 127.0.0.1 (valid until 2126); never used outside tests.
  const key = readFileSync(new URL("self-signed.key", fixtures), "utf8");
  const cert = readFileSync(new URL("self-signed.crt", fixtures), "utf8");

  it("verifies certificates by default and forwards when verification is turned off", async () => {
    const target = await startHttpsTarget(key, cert, (_req, res) => res.end("secure"));
    const registry = new PoolRegistry();
    try {
      const strict = registry.get(target.origin, { connectTimeoutMs: 2_000 });
      const lax = registry.get(target.origin, { connectTimeoutMs: 2_000, rejectUnauthorized: false });
      expect(lax).not.toBe(strict);
      let useStrict = true;
      const proxy = await startProxy(() => [
        { target: { origin: target.origin, basePath: "" }, pool: useStrict ? strict : lax },
      ]);
      const refused = await request(proxy.port, {});
      expect(refused.status).toBe(502);
      expect(proxy.outcomes[0]).toMatchObject({ errorClass: "other", responseStarted: false });
      useStrict = false;
      const ok = await request(proxy.port, {});
      expect(ok.status).toBe(200);
      expect(ok.body.toString()).toBe("secure");
    } finally {
      await registry.close();
    }
  });
});

import http, { type IncomingMessage, type ServerResponse } from "node:http";
import net from "node:net";
import { once } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import {
  bufferBody,
  BUFFERED_BODY_LIMIT,
  forward,
  HOLD_BODY_LIMIT,
  replayHeld,
  sendUpstreamError,
  smallBodyLength,
  type ForwardOutcome,
} from "../../../../data-plane/src/proxy/forward.js";
import { closeAll, deferred, listen, newPool, request, startTarget } from "./harness.js";

/**
 * forward()'s options for retries: holding back a retryable status (holdStatuses), sending a
 * buffered body (body) so that it can be sent again, and the request-side idle timeout (sendTimeoutMs).
 */

afterEach(closeAll);

const HOLD = new Set([503]);

/** A target answering `status` with `body` (and recording request bodies). */
async function target(status: number, body: string | Buffer, headers: Record<string, string> = {}) {
  const seen: string[] = [];
  const t = await startTarget((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      seen.push(Buffer.concat(chunks).toString());
      res.writeHead(status, { "content-type": "text/plain", "x-from": String(status), ...headers });
      res.end(body);
    });
  });
  return { ...t, seen };
}

/**
 * A proxy with the handler's retry shape: attempts in order with holdStatuses on all but the last;
 * a held response is replayed when no attempt follows. Bodies are buffered when `buffer` is set.
 */
async function proxy(origins: string[], opts: { buffer?: boolean; hold?: boolean; sendTimeoutMs?: number } = {}) {
  const pools = origins.map((o) => newPool(o));
  const attempts: ForwardOutcome[] = [];
  const done = new Set<() => void>();
  const server = http.createServer(async (req: IncomingMessage, res: ServerResponse) => {
    let body: Buffer | undefined;
    if (opts.buffer) {
      body = await bufferBody(req, smallBodyLength(req.rawHeaders), 5_000);
      if (body === undefined) return void res.destroy();
    }
    let outcome: ForwardOutcome | undefined;
    let held: ForwardOutcome["held"];
    for (let i = 0; i < origins.length; i++) {
      outcome = await forward(req, res, { origin: origins[i], basePath: "" }, req.url ?? "/", {
        requestId: "rid",
        clientAddr: "127.0.0.1",
        passHost: "pass",
        headersTimeoutMs: 10_000,
        bodyTimeoutMs: 10_000,
        pool: pools[i],
        holdStatuses: opts.hold !== false && i < origins.length - 1 ? HOLD : undefined,
        body,
        sendTimeoutMs: opts.sendTimeoutMs,
      });
      attempts.push(outcome);
      if (outcome.held !== undefined) held = outcome.held;
      else if (outcome.errorClass === undefined || outcome.responseStarted || outcome.requestBodyConsumed) break;
    }
    if (outcome!.held !== undefined || (held !== undefined && outcome!.errorClass !== undefined && !outcome!.responseStarted)) replayHeld(res, held!);
    else if (outcome!.errorClass !== undefined && !outcome!.responseStarted) sendUpstreamError(res, outcome!, "rid");
    for (const d of done) d();
  });
  const running = await listen(server);
  return {
    ...running,
    attempts,
    /** Resolves after the next request's last attempt. */
    next: () => new Promise<void>((resolve) => done.add(resolve)),
  };
}

describe("forward: holdStatuses", () => {
  it("keeps a retryable status back and lets the next attempt answer", async () => {
    const bad = await target(503, "busy");
    const good = await target(200, "fine");
    const p = await proxy([bad.origin, good.origin]);
    const res = await request(p.port, { path: "/x" });
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe("fine");
    expect(p.attempts[0]).toMatchObject({ status: 503, responseStarted: false, requestBodyConsumed: false, errorClass: undefined });
    expect(p.attempts[0].held).toMatchObject({ status: 503 });
    expect(p.attempts[0].held!.body.toString()).toBe("busy");
    expect(bad.seen).toHaveLength(1);
  });

  it("relays the target's own held answer (status, headers, body) when no attempt follows", async () => {
    const bad = await target(503, "try later", { "retry-after": "7" });
    const p = await proxy([bad.origin, bad.origin]);
    // Both attempts 503: the first is held, the last is relayed as it is.
    const res = await request(p.port, {});
    expect(res.status).toBe(503);
    expect(res.headers["retry-after"]).toBe("7");
    expect(res.body.toString()).toBe("try later");
    expect(p.attempts.map((a) => a.held !== undefined)).toEqual([true, false]);
  });

  it("replays a held answer when the next attempt fails without one", async () => {
    const bad = await target(503, "held body");
    const closed = await listen(net.createServer((s) => s.destroy()));
    const p = await proxy([bad.origin, closed.origin]);
    const res = await request(p.port, {});
    expect(res.status).toBe(503);
    expect(res.body.toString()).toBe("held body");
    expect(p.attempts[1].errorClass).toBe("reset");
  });

  it("relays a held status whose body is too large to keep, committing it", async () => {
    const big = Buffer.alloc(HOLD_BODY_LIMIT + 10, "z");
    const bad = await target(503, big);
    const good = await target(200, "fine");
    const p = await proxy([bad.origin, good.origin]);
    const res = await request(p.port, {});
    expect(res.status).toBe(503);
    expect(res.body.equals(big)).toBe(true);
    expect(p.attempts).toHaveLength(1);
    expect(p.attempts[0]).toMatchObject({ status: 503, responseStarted: true, held: undefined });
    expect(good.seen).toHaveLength(0);
  });

  it("does not hold the answer to a streamed body (it could not be sent again)", async () => {
    const bad = await target(503, "busy");
    const good = await target(200, "fine");
    const p = await proxy([bad.origin, good.origin]);
    const res = await request(p.port, { method: "POST", headers: { "transfer-encoding": "chunked" }, body: "payload" });
    expect(res.status).toBe(503);
    expect(p.attempts).toHaveLength(1);
    expect(p.attempts[0]).toMatchObject({ responseStarted: true, requestBodyConsumed: true });
    expect(good.seen).toHaveLength(0);
  });

  it("holds the answer to a buffered body and sends the same bytes to the next target", async () => {
    const bad = await target(503, "busy");
    const good = await target(200, "fine");
    const p = await proxy([bad.origin, good.origin], { buffer: true });
    const res = await request(p.port, { method: "POST", headers: { "content-type": "application/json" }, body: '{"n":1}' });
    expect(res.status).toBe(200);
    expect(bad.seen).toEqual(['{"n":1}']);
    expect(good.seen).toEqual(['{"n":1}']);
    expect(p.attempts[0]).toMatchObject({ requestBodyConsumed: false });
  });
});

describe("smallBodyLength", () => {
  it.each([
    [["content-length", "10"], 10],
    [["Content-Length", "0"], 0],
    [["content-length", String(BUFFERED_BODY_LIMIT)], BUFFERED_BODY_LIMIT],
    [["content-length", String(BUFFERED_BODY_LIMIT + 1)], 0],
    [["content-length", "10", "transfer-encoding", "chunked"], 0],
    [["transfer-encoding", "chunked"], 0],
    [["content-length", "1e3"], 0],
    [["host", "x"], 0],
  ] as [string[], number][])("%j → %i", (raw, want) => {
    expect(smallBodyLength(raw)).toBe(want);
  });
});

describe("forward: sendTimeoutMs", () => {
  it("aborts an attempt whose client stalls mid-body, blaming the client", async () => {
    const t = await startTarget((req, res) => {
      req.resume();
      req.on("end", () => res.end("late"));
    });
    const p = await proxy([t.origin], { sendTimeoutMs: 200 });
    const finished = p.next();
    const socket = net.connect(p.port, "127.0.0.1");
    await once(socket, "connect");
    socket.write("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten b");
    socket.on("data", () => undefined);
    await finished;
    await once(socket, "close");
    expect(p.attempts[0]).toMatchObject({ errorClass: "aborted", responseStarted: false });
  });

  it("does not cut a client that sent its whole body and waits longer than the send timeout", async () => {
    const release = deferred();
    const t = await startTarget((req, res) => {
      req.resume();
      req.on("end", () => void release.promise.then(() => res.end("slow answer")));
    });
    const p = await proxy([t.origin], { sendTimeoutMs: 100 });
    const pending = request(p.port, { method: "POST", body: "abc" });
    // Three send timeouts pass while the client only waits for the answer.
    await new Promise((r) => setTimeout(r, 350));
    release.resolve();
    const res = await pending;
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe("slow answer");
  });
});

import http from "node:http";
import http2 from "node:http2";
import net from "node:net";

/**
 * One cleartext port for HTTP/2 (gRPC, Connect streaming) and HTTP/1.1 (curl, REST, Connect unary,
 * gRPC-Web). Node's h2c server cannot fall back to HTTP/1.1 without TLS, so each connection's first
 * bytes are inspected: the HTTP/2 client preface goes to the http2 server, anything else to the
 * http server.
 */

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** How long HTTP/2 sessions may finish their streams at shutdown. */
const H2_GRACE_MS = 1_000;

/** A running dual-protocol listener. */
export interface DualServer {
  /** Bound address (port resolved when 0 was asked). */
  readonly address: net.AddressInfo;
  /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then closes what remains. */
  close(graceMs?: number): Promise<void>;
}

/** Options of listenDual. */
export interface DualServerOptions {
  /**
   * Sees every HTTP/2 stream before the request handler and may claim it (serve it on the raw
   * stream, without the compatibility request and response objects) by returning true.
   */
  readonly claimHttp2Stream?: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;
}

export async function listenDual(host: string, port: number, handler: Handler, options: DualServerOptions = {}): Promise<DualServer> {
  const h1 = http.createServer({ keepAliveTimeout: 65_000 }, handler as http.RequestListener);
  // h1 never listens itself (connections are handed to it), and Node starts tracking its connections
  // only on "listening": without this, closeIdleConnections() is a no-op (an idle keep-alive client
  // holds shutdown for the whole grace period) and headersTimeout/requestTimeout are not enforced.
  h1.emit("listening");
  // Node's HTTP/2 defaults suit many long-lived discovery streams: no cap on concurrent streams per
  // session (maxConcurrentStreams 2^32-1), and maxSessionMemory (10 MB) counts data queued on a
  // session's streams, which refuses new streams on it while exceeded; a data plane has one stream
  // per connection, and discovery/grpc-stream.ts writes big pushes in slices so that even hundreds
  // of multiplexed streams stay under it (test/bench/fanout.mjs runs 200 per connection).
  const h2 = http2.createServer({}, handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
  const claim = options.claimHttp2Stream;
  if (claim !== undefined) {
    // The compatibility layer is the server's own 'stream' listener (it builds the request and
    // response objects and emits 'request'): run it only for the streams not claimed.
    const compat = h2.listeners("stream") as ((...args: unknown[]) => void)[];
    h2.removeAllListeners("stream");
    h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
      if (claim(stream, headers)) return;
      for (const l of compat) l.call(h2, stream, headers, ...rest);
    });
  }
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.Http2Session>();
  h2.on("session", (s) => {
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
  });

  const tcp = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    let seen: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      const isH2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
      // Wait for more bytes only while the input could still be the preface.
      if (isH2 && seen.length < PREFACE.length) return;
      socket.removeListener("data", onData);
      socket.pause();
      // Both servers get the socket itself with the sniffed bytes unshifted back. The http parser
      // reads through the stream interface once 'data' listeners exist; an http2 session reads
      // what is already buffered on the socket before its native handle (nodejs/node#34532), so
      // no JS stream relays every frame in between.
      socket.unshift(seen);
      if (isH2) {
        h2.emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
    socket.on("error", () => socket.destroy());
  });

  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(port, host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });

  return {
    address: tcp.address() as net.AddressInfo,
    async close(graceMs = 10_000) {
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      h1.closeIdleConnections();
      for (const s of sessions) s.close();
      // HTTP/2 carries the data planes' discovery streams: they never end on their own and a data
      // plane resumes from its version on another replica or after restart, so they get a short
      // grace (a stream parked behind a peer that stopped reading would otherwise hold shutdown).
      const h2Deadline = setTimeout(() => {
        for (const s of sessions) s.destroy();
      }, Math.min(graceMs, H2_GRACE_MS));
      h2Deadline.unref();
      const deadline = setTimeout(() => {
        for (const s of sessions) s.destroy();
        h1.closeAllConnections();
        for (const s of sockets) s.destroy();
      }, graceMs);
      deadline.unref();
      // http.Server has no "all requests finished" event; poll the socket set briefly.
      while (sockets.size > 0) {
        h1.closeIdleConnections();
        await new Promise((r) => setTimeout(r, 20));
      }
      clearTimeout(deadline);
      clearTimeout(h2Deadline);
      h1.close(); // stops h1's connection-checking timer
      await closed;
    },
  };
}

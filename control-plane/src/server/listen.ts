import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { Duplex } from "node:stream";

/**
 * One cleartext port for HTTP/2 (gRPC, Connect streaming) and HTTP/1.1 (curl, REST, Connect unary,
 * gRPC-Web). Node's h2c server cannot fall back to HTTP/1.1 without TLS, so each connection's first
 * bytes are inspected: the HTTP/2 client preface goes to the http2 server, anything else to the
 * http server.
 */

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** A running dual-protocol listener. */
export interface DualServer {
  /** Bound address (port resolved when 0 was asked). */
  readonly address: net.AddressInfo;
  /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then closes what remains. */
  close(graceMs?: number): Promise<void>;
}

/**
 * The http2 session reads from a net.Socket's native handle, so bytes already consumed while
 * sniffing would never reach it. A plain Duplex (which http2 wraps in a JS stream) replays them
 * first, then relays the socket both ways.
 */
function replaying(socket: net.Socket, head: Buffer): Duplex {
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(err, cb) {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  duplex.push(head);
  socket.on("data", (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.on("end", () => duplex.push(null));
  socket.on("close", () => duplex.destroy());
  return duplex;
}

export async function listenDual(host: string, port: number, handler: Handler): Promise<DualServer> {
  const h1 = http.createServer({ keepAliveTimeout: 65_000 }, handler as http.RequestListener);
  // h1 never listens itself (connections are handed to it), and Node starts tracking its connections
  // only on "listening": without this, closeIdleConnections() is a no-op (an idle keep-alive client
  // holds shutdown for the whole grace period) and headersTimeout/requestTimeout are not enforced.
  h1.emit("listening");
  const h2 = http2.createServer({}, handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
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
      if (isH2) {
        h2.emit("connection", replaying(socket, seen));
      } else {
        // The http parser reads through the stream interface once 'data' listeners exist, so
        // unshifted bytes are seen.
        socket.unshift(seen);
        h1.emit("connection", socket);
      }
      socket.resume();
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
      h1.close(); // stops h1's connection-checking timer
      await closed;
    },
  };
}

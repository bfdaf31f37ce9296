import http from "node:http";
import type net from "node:net";

/** A running proxy listener. */
export interface ProxyServer {
  readonly address: net.AddressInfo;
  /** Requests being handled now. */
  inFlight(): number;
  /**
   * Graceful stop: stop accepting, let in-flight requests (including long streams) finish for up to
   * `graceMs`, then abort what remains via `abort` and close every connection.
   */
  close(graceMs: number, abort: AbortController): Promise<void>;
}

/**
 * The data plane's HTTP/1.1 listener. Timeouts are set for a proxy of long, streamed responses:
 * no overall request timeout (an LLM stream may last minutes), a bounded time to receive headers
 * (slowloris), and keep-alive longer than typical load balancers' idle timeouts.
 */
export async function listenProxy(
  host: string,
  port: number,
  handler: (req: http.IncomingMessage, res: http.ServerResponse) => void,
): Promise<ProxyServer> {
  let active = 0;
  let closing = false;
  let drained: (() => void) | undefined;
  // One listener shared by every response ('close' fires once per response), not a closure each.
  const onResponseClose = () => {
    active--;
    // While draining, a keep-alive connection that just went idle is closed instead of reused.
    if (closing) server.closeIdleConnections();
    if (active === 0) drained?.();
  };
  const server = http.createServer(
    { keepAliveTimeout: 65_000, headersTimeout: 30_000, requestTimeout: 0, noDelay: true },
    (req, res) => {
      active++;
      res.on("close", onResponseClose);
      handler(req, res);
    },
  );
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    address: server.address() as net.AddressInfo,
    inFlight: () => active,
    async close(graceMs, abort) {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      if (active > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, graceMs);
          drained = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      abort.abort();
      server.closeAllConnections();
      await closed;
    },
  };
}

import http from "node:http";
import type net from "node:net";
import type { Registry } from "prom-client";

/**
 * The data plane's admin listener (`--metrics-listen`): Prometheus metrics at /metrics and a health
 * document at /healthz. Kept off the proxy's port so that scrapes and probes never compete with, or
 * get routed like, client traffic, and so it can listen on a private interface.
 */

/** What /healthz reports. */
export interface HealthzSource {
  /** Configuration version applied (0: none yet). */
  version(): bigint;
  controlPlane(): { connected: boolean; lastContactMs: number };
  readonly nodeId: string;
}

/** A running admin listener. */
export interface AdminServer {
  readonly address: net.AddressInfo;
  readonly url: string;
  close(): Promise<void>;
}

/**
 * /healthz body. `status`: "ok"; "control_plane_lost" while the discovery stream is down (the node
 * keeps serving its last configuration, so it stays 200: taking it out of a load balancer then would
 * turn a control-plane outage into a data-plane one); "no_config" before the first snapshot, with
 * 503, since the node cannot route anything yet. `last_contact_ms` is the time since the control
 * plane last sent anything (null: never).
 */
export function healthz(src: HealthzSource): { status: number; body: Record<string, unknown> } {
  const version = src.version();
  const cp = src.controlPlane();
  const status = version === 0n ? "no_config" : cp.connected ? "ok" : "control_plane_lost";
  return {
    status: version === 0n ? 503 : 200,
    body: {
      status,
      node_id: src.nodeId,
      version: String(version),
      control_plane_connected: cp.connected,
      last_contact_ms: cp.lastContactMs === 0 ? null : Math.max(0, Date.now() - cp.lastContactMs),
    },
  };
}

/** Starts the admin listener. */
export async function listenAdmin(host: string, port: number, registry: Registry, src: HealthzSource): Promise<AdminServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?", 1)[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("method not allowed\n");
      return;
    }
    if (path === "/metrics") {
      registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": registry.contentType, "cache-control": "no-store" }).end(text),
        (err: unknown) => res.writeHead(500, { "content-type": "text/plain" }).end(`metrics failed: ${String(err)}\n`),
      );
      return;
    }
    if (path === "/healthz") {
      const h = healthz(src);
      res.writeHead(h.status, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(h.body));
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /metrics or /healthz\n");
  });
  // Scrapers keep connections alive; close() must not wait on them.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as net.AddressInfo;
  return {
    address,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

import type { Logger } from "pino";
import { LiveConfig } from "./config/live.js";
import { DiscoveryClient } from "./discovery/client.js";
import { SnapshotFile } from "./discovery/snapshot-file.js";
import { createProxyHandler } from "./proxy/handler.js";
import { PoolRegistry } from "./proxy/pools.js";
import { listenProxy } from "./proxy/server.js";
import { openCountryDb } from "./split/geo.js";
import { CidrSet } from "./split/ip.js";
import type { RequestViewEnv } from "./split/incoming-request-view.js";

/** Options of a data-plane process. */
export interface DataPlaneOptions {
  readonly host: string;
  readonly port: number;
  /** Control-plane URLs (several for HA; tried in turn). */
  readonly controlPlanes: readonly string[];
  readonly nodeId: string;
  readonly token: string;
  readonly labels?: Record<string, string>;
  readonly softwareVersion: string;
  readonly log: Logger;
  /** How long in-flight requests may run after SIGTERM before they are cut. */
  readonly drainMs?: number;
  /**
   * Proxies whose X-Forwarded-For is believed when computing the client address (remote_addr,
   * ipmatch, geo_country, client_ip hashing). Without them the socket address is the client.
   */
  readonly trustedProxies?: readonly string[];
  /** MaxMind-format country database for geo_country. */
  readonly geoDbPath?: string;
  /** File holding the last applied snapshot, to start serving without a control plane. */
  readonly snapshotCachePath?: string;
}

/** A running data plane. */
export interface DataPlane {
  readonly url: string;
  readonly live: LiveConfig;
  readonly discovery: DiscoveryClient;
  close(): Promise<void>;
}

/** Starts a data plane: the proxy listener and the discovery stream. */
export async function startDataPlane(opts: DataPlaneOptions): Promise<DataPlane> {
  const log = opts.log;
  const pools = new PoolRegistry();
  const live = new LiveConfig(pools);
  const abort = new AbortController();
  const env: RequestViewEnv = {
    trustedProxies: opts.trustedProxies?.length ? CidrSet.parse(opts.trustedProxies, "trusted-proxies") : undefined,
    geo: opts.geoDbPath !== undefined ? await openCountryDb(opts.geoDbPath, "geo-db") : undefined,
  };
  const handler = createProxyHandler({ live, env, signal: abort.signal });
  const server = await listenProxy(opts.host, opts.port, handler);

  const cacheFile =
    opts.snapshotCachePath === undefined
      ? undefined
      : new SnapshotFile(opts.snapshotCachePath, (err) => log.warn({ err: err.message }, "could not write snapshot cache"));
  const discovery = new DiscoveryClient(
    {
      urls: opts.controlPlanes,
      nodeId: opts.nodeId,
      token: opts.token,
      labels: opts.labels,
      softwareVersion: opts.softwareVersion,
    },
    {
      appliedVersion: () => live.version,
      applySnapshot: (snapshot) => {
        try {
          live.apply(snapshot);
          log.info({ version: String(snapshot.version), resources: snapshot.resources.length }, "applied snapshot");
          void cacheFile?.save(snapshot);
        } catch (err) {
          log.warn({ version: String(snapshot.version), err: (err as Error).message }, "refused snapshot; still serving the previous one");
          throw err;
        }
      },
      onState: ({ connected, url, error }) => {
        if (connected) log.info({ controlPlane: url }, "connected to control plane");
        else log.warn({ controlPlane: url, error }, "lost control plane; serving the last applied configuration");
      },
    },
  );
  if (cacheFile !== undefined) {
    // Static stability: serve the last configuration we had even if no control plane answers.
    try {
      const cached = await cacheFile.load();
      if (cached !== undefined) {
        live.apply(cached);
        discovery.seed(cached);
        log.info({ version: String(cached.version), file: cacheFile.file }, "serving cached snapshot until the control plane answers");
      }
    } catch (err) {
      log.warn({ file: cacheFile.file, err: (err as Error).message }, "ignoring unusable snapshot cache");
    }
  }
  discovery.start();
  const url = `http://${opts.host.includes(":") ? `[${opts.host}]` : opts.host}:${server.address.port}`;
  log.info({ url, nodeId: opts.nodeId, controlPlanes: opts.controlPlanes }, "data plane listening");

  return {
    url,
    live,
    discovery,
    async close() {
      await server.close(opts.drainMs ?? 30_000, abort);
      await discovery.close();
      await cacheFile?.flush();
      await pools.close();
    },
  };
}

import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import { listenAdmin, type AdminServer } from "./admin/server.js";
import { LiveConfig } from "./config/live.js";
import { followConfig } from "./counters/follow-config.js";
import { startRedisCounters } from "./counters/start.js";
import { DiscoveryClient } from "./discovery/client.js";
import { SnapshotFile } from "./discovery/snapshot-file.js";
import { HealthManager } from "./health/manager.js";
import { accessLogger, type AccessLogLevel } from "./metrics/access-log.js";
import { createMetricsRegistry } from "./metrics/prometheus.js";
import { createProxyHandler, type RequestObserver } from "./proxy/handler.js";
import { ReportBuilder } from "./report/report.js";
import { TrafficStats } from "./report/stats.js";
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
  /** Redis for fleet-wide counters (exact splits across data planes); local rotation without it. */
  readonly redisUrl?: string;
  /** With redisUrl: positions leased per INCRBY and handed out locally (0: exact, coalesced). */
  readonly redisLease?: number;
  /** Address of the admin listener (/metrics, /healthz); none when unset. */
  readonly metricsListen?: { readonly host: string; readonly port: number };
  /** Level of the per-request access log line; "off" (default) writes none. */
  readonly accessLog?: AccessLogLevel;
  /** Interval of the periodic report to the control plane (jittered ±20%). Default 5000 ms. */
  readonly reportIntervalMs?: number;
  /** How long fleet verdicts and probe assignments outlive a lost control plane. Default 30000 ms. */
  readonly fleetStaleMs?: number;
}

/** A running data plane. */
export interface DataPlane {
  readonly url: string;
  readonly live: LiveConfig;
  readonly discovery: DiscoveryClient;
  /** True while Redis counters are configured but unavailable (picks are random by weight). */
  countersFallback(): boolean;
  /** Health state of every backend and target. */
  readonly health: HealthManager;
  /** URL of the admin listener (/metrics, /healthz), when --metrics-listen is set. */
  readonly metricsUrl: string | undefined;
  close(): Promise<void>;
}

/** Starts a data plane: the proxy listener and the discovery stream. */
export async function startDataPlane(opts: DataPlaneOptions): Promise<DataPlane> {
  const log = opts.log;
  const pools = new PoolRegistry();
  const live = new LiveConfig(pools);
  // Health and traffic counters follow every applied snapshot (the cached one below included):
  // registered first, so every backend has its health-driven picker before a request reads it.
  const health = new HealthManager({ log, fleetStaleMs: opts.fleetStaleMs });
  const stats = new TrafficStats();
  live.onApply((config) => {
    health.sync(config);
    stats.sync(config);
  });
  const snapshots = { applied: 0, refused: 0 };
  const reports = new ReportBuilder(health, stats, () => live.version);
  const access = accessLogger(log, opts.accessLog ?? "off");
  const onDone: RequestObserver = (req, requestId, route, backend, target, status, attempts, startMs, errorClass) => {
    stats.request(route, backend, status, attempts, performance.now() - startMs);
    access?.(req, requestId, route, backend, target, status, attempts, startMs, errorClass);
  };
  // At the shutdown deadline the server closes every client connection, and forward() aborts an
  // attempt whose client is gone: attempts need no shutdown signal of their own (one listener per
  // attempt on a shared signal cost more than the rest of the handler's bookkeeping).
  const abort = new AbortController();
  const env: RequestViewEnv = {
    trustedProxies: opts.trustedProxies?.length ? CidrSet.parse(opts.trustedProxies, "trusted-proxies") : undefined,
    geo: opts.geoDbPath !== undefined ? await openCountryDb(opts.geoDbPath, "geo-db") : undefined,
  };
  const counters = opts.redisUrl === undefined ? undefined : await startRedisCounters({ url: opts.redisUrl, lease: opts.redisLease, log });
  // Before any snapshot is applied (the cache below included), so every retired key is seen.
  if (counters !== undefined) followConfig(live, counters);
  const handler = createProxyHandler({
    live,
    env,
    counters,
    observe: (backend, target, outcome) => {
      health.observe(target, outcome);
      stats.attempt(backend, target, outcome);
    },
    onDone,
  });
  const server = await listenProxy(opts.host, opts.port, handler).catch(async (err: unknown) => {
    await counters?.close();
    throw err;
  });

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
      reportIntervalMs: opts.reportIntervalMs,
    },
    {
      appliedVersion: () => live.version,
      buildReport: () => {
        const report = reports.build();
        report.countersFallback = counters?.fallback ?? false;
        return report;
      },
      onFleetHealth: (fleet) => health.applyFleetHealth(fleet),
      onDeltaRefused: (version, error) => {
        snapshots.refused++;
        log.warn({ version: String(version), served: String(live.version), err: error }, "refused delta; asking for a full snapshot");
      },
      applySnapshot: (snapshot) => {
        try {
          live.apply(snapshot);
          snapshots.applied++;
          log.info({ version: String(snapshot.version), resources: snapshot.resources.length }, "applied snapshot");
          void cacheFile?.save(snapshot);
        } catch (err) {
          snapshots.refused++;
          log.warn({ version: String(snapshot.version), err: (err as Error).message }, "refused snapshot; still serving the previous one");
          throw err;
        }
      },
      onState: ({ connected, url, error }) => {
        health.setControlPlaneConnected(connected);
        if (connected) log.info({ controlPlane: url }, "connected to control plane");
        else if (live.current === undefined) log.warn({ controlPlane: url, error }, "cannot reach the control plane; no configuration yet (answering 503)");
        else log.warn({ controlPlane: url, error, version: String(live.version) }, "lost control plane; serving the last applied configuration");
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
  let admin: AdminServer | undefined;
  if (opts.metricsListen !== undefined) {
    const controlPlane = () => discovery.status();
    const registry = createMetricsRegistry({
      health,
      stats,
      configVersion: () => live.version,
      controlPlane,
      snapshots,
      countersFallback: () => counters?.fallback ?? false,
    });
    try {
      admin = await listenAdmin(opts.metricsListen.host, opts.metricsListen.port, registry, { nodeId: opts.nodeId, version: () => live.version, controlPlane });
    } catch (err) {
      await server.close(0, abort);
      await counters?.close();
      await health.close();
      await pools.close();
      throw err;
    }
    log.info({ url: admin.url }, "metrics listening");
  }
  // A target changing state is reported at once, not at the next interval.
  health.onChange(() => discovery.reportNow());
  discovery.start();
  const url = `http://${opts.host.includes(":") ? `[${opts.host}]` : opts.host}:${server.address.port}`;
  log.info({ url, nodeId: opts.nodeId, controlPlanes: opts.controlPlanes }, "data plane listening");

  return {
    url,
    live,
    discovery,
    countersFallback: () => counters?.fallback ?? false,
    health,
    metricsUrl: admin?.url,
    async close() {
      await server.close(opts.drainMs ?? 30_000, abort);
      await counters?.close();
      await discovery.close();
      await health.close();
      await admin?.close();
      await cacheFile?.flush();
      await pools.close();
    },
  };
}

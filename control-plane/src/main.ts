import { setMaxListeners } from "node:events";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { restHandler } from "./admin/rest.js";
import { ConfigApi } from "./config/api.js";
import { Authenticator } from "./config/auth.js";
import { ConfigServiceImpl } from "./config/connect-service.js";
import { loadOrCreateSecret } from "./config/secrets.js";
import { NodeRegistry } from "./discovery/nodes.js";
import { SnapshotCache } from "./discovery/snapshot-cache.js";
import { grpcStreamHandler } from "./discovery/grpc-stream.js";
import { DiscoveryServer } from "./discovery/stream.js";
import { Fleet } from "./fleet/fleet.js";
import { RolloutApi } from "./rollout/api.js";
import { RolloutServiceImpl } from "./rollout/connect-service.js";
import { RolloutController } from "./rollout/controller.js";
import { RolloutWriter } from "./rollout/writer.js";
import { routes } from "./routes.js";
import { listenDual } from "./server/listen.js";
import { describeStore, openConfigStore, type StoreChoice } from "./store/open.js";
import type { ConfigStore } from "./store/store.js";

/** Nodes with evidence needed before a fleet-wide down verdict (a strict majority of them is needed too). */
export const FLEET_MIN_VOTERS = 1;

/** Options of a control-plane process. */
export interface ControlPlaneOptions {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  /** Admin key; generated and stored in the data dir when absent. */
  readonly adminKey?: string;
  /** Token data planes must present; generated and stored in the data dir when absent. */
  readonly nodeToken?: string;
  readonly log: Logger;
  /**
   * Where the configuration lives: the embedded file store in `dataDir` (default), or Redis shared
   * by control-plane replicas. Admin key and node token come from the options or `dataDir` either way.
   */
  readonly store?: StoreChoice;
}

/** A running control plane. */
export interface ControlPlane {
  readonly url: string;
  readonly adminKey: string;
  readonly nodeToken: string;
  readonly api: ConfigApi;
  readonly nodes: NodeRegistry;
  /** Fleet health: the view built from data planes' reports (rollouts read backendStats), probe assignment, FleetHealth pushes. */
  readonly fleet: Fleet;
  /** Graceful stop: refuse new work, end streams, finish in-flight calls, close the store. */
  close(): Promise<void>;
}

/** Starts a control plane on the embedded file store. */
export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const log = opts.log;
  const admin = opts.adminKey !== undefined ? { value: opts.adminKey, created: false } : await loadOrCreateSecret(opts.dataDir, "admin.key", "adm");
  if (admin.created) {
    // Printed once, on the start that generated it; afterwards it is only in the 0600 file.
    process.stdout.write(`\nGenerated admin key (stored in ${opts.dataDir}/admin.key, shown only now):\n  ${admin.value}\n\n`);
  }
  const token = opts.nodeToken !== undefined ? { value: opts.nodeToken, created: false } : await loadOrCreateSecret(opts.dataDir, "node.token", "nt");
  if (token.created) log.info({ file: `${opts.dataDir}/node.token` }, "generated node token for data planes");

  const store: ConfigStore = await openConfigStore(opts.store, opts.dataDir, log);
  const api = await ConfigApi.open(store);
  const cache = new SnapshotCache(api.current());
  api.onChange((s) => cache.update(s));
  const nodes = new NodeRegistry();
  const auth = new Authenticator(admin.value, (hash) => api.lookupKey(hash));
  // The fleet pushes through the discovery server, which is built just below; it sends nothing
  // before a node connects.
  const fleet = new Fleet({
    config: api.current(),
    send: (nodeId, msg) => discovery.sendTo(nodeId, msg),
    // One node with evidence (its own traffic or probes) that sees a target down is believed while no
    // node with evidence contradicts it, so nodes that never sent the target a request stop routing
    // there before a client request fails on them.
    view: { minVoters: FLEET_MIN_VOTERS },
  });
  api.onChange((s) => fleet.configChanged(s));
  // Rollouts commit through the same store as config writes and judge canaries on the fleet's reports.
  const rolloutWriter = new RolloutWriter(store, () => api.current());
  const rollouts = new RolloutController(api, rolloutWriter, fleet, { log });
  const rolloutApi = new RolloutApi(api, rolloutWriter, rollouts);
  const discovery = new DiscoveryServer(cache, nodes, token.value, {
    onConnect: (n) => {
      log.info({ node: n.nodeId, applied: String(n.ackedVersion) }, "data plane connected");
      fleet.nodeConnected(n);
    },
    onDisconnect: (n, reason) => {
      log.info({ node: n.nodeId, reason }, "data plane disconnected");
      fleet.nodeDisconnected(n);
    },
    onNack: (n, version, error) => log.warn({ node: n.nodeId, version: String(version), error }, "data plane refused a snapshot"),
    onReport: (n, report) => fleet.report(n, report),
  });
  const shutdown = new AbortController();
  // Every Connect stream listens on this one signal: thousands of listeners are expected.
  setMaxListeners(0, shutdown.signal);
  const connect = connectNodeAdapter({
    routes: routes(new ConfigServiceImpl(api, auth, nodes, fleet), discovery, new RolloutServiceImpl(rolloutApi, auth)),
    shutdownSignal: shutdown.signal,
  });
  const rest = restHandler(api, auth, nodes, fleet, rolloutApi);
  // Data planes' gRPC discovery streams are served on the raw HTTP/2 stream; Connect serves the rest.
  const claimHttp2Stream = grpcStreamHandler(discovery, shutdown.signal);
  const server = await listenDual(opts.host, opts.port, (req, res) => {
    rest(req, res).then(
      (handled) => {
        if (!handled) connect(req, res);
      },
      (err: unknown) => {
        log.error({ err }, "request handler failed");
        res.destroy();
      },
    );
  }, { claimHttp2Stream });
  const url = `http://${opts.host.includes(":") ? `[${opts.host}]` : opts.host}:${server.address.port}`;
  log.info({ url, version: String(api.current().version), dataDir: opts.dataDir, store: describeStore(opts.store, opts.dataDir) }, "control plane listening");
  rollouts.start();

  return {
    url,
    adminKey: admin.value,
    nodeToken: token.value,
    api,
    nodes,
    fleet,
    async close() {
      shutdown.abort(new ConnectError("control plane shutting down", Code.Unavailable));
      await server.close(5_000);
      await rollouts.close();
      fleet.close();
      cache.close();
      api.close();
      await store.close();
    },
  };
}

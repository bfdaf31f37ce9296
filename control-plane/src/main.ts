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
import { DiscoveryServer } from "./discovery/stream.js";
import { routes } from "./routes.js";
import { listenDual } from "./server/listen.js";
import { FileStore } from "./store/file.js";
import type { ConfigStore } from "./store/store.js";

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
}

/** A running control plane. */
export interface ControlPlane {
  readonly url: string;
  readonly adminKey: string;
  readonly nodeToken: string;
  readonly api: ConfigApi;
  readonly nodes: NodeRegistry;
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

  const store: ConfigStore = await FileStore.open(opts.dataDir);
  const api = await ConfigApi.open(store);
  const cache = new SnapshotCache(api.current());
  api.onChange((s) => cache.update(s));
  const nodes = new NodeRegistry();
  const auth = new Authenticator(admin.value, (hash) => api.lookupKey(hash));
  const discovery = new DiscoveryServer(cache, nodes, token.value, {
    onConnect: (n) => log.info({ node: n.nodeId, applied: String(n.ackedVersion) }, "data plane connected"),
    onDisconnect: (n, reason) => log.info({ node: n.nodeId, reason }, "data plane disconnected"),
    onNack: (n, version, error) => log.warn({ node: n.nodeId, version: String(version), error }, "data plane refused a snapshot"),
  });
  const shutdown = new AbortController();
  const connect = connectNodeAdapter({
    routes: routes(new ConfigServiceImpl(api, auth, nodes), discovery),
    shutdownSignal: shutdown.signal,
  });
  const rest = restHandler(api, auth, nodes);
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
  });
  const url = `http://${opts.host.includes(":") ? `[${opts.host}]` : opts.host}:${server.address.port}`;
  log.info({ url, version: String(api.current().version), dataDir: opts.dataDir }, "control plane listening");

  return {
    url,
    adminKey: admin.value,
    nodeToken: token.value,
    api,
    nodes,
    async close() {
      shutdown.abort(new ConnectError("control plane shutting down", Code.Unavailable));
      await server.close(5_000);
      cache.close();
      api.close();
      await store.close();
    },
  };
}

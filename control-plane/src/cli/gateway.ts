#!/usr/bin/env node
import { readFileSync } from "node:fs";
import os from "node:os";
import { pino, type Logger } from "pino";
import { startDataPlane } from "../../../data-plane/src/main.js";
import { startControlPlane } from "../main.js";
import { helpText, parseFlags, parseHostPort, parseUrl, UsageError, type FlagSpec, type ParsedFlags } from "./args.js";

/**
 * The `gateway` command: the control plane, a data plane, or both in one process (the embedded
 * default that `npm start` runs). SIGTERM and SIGINT shut down gracefully and exit 0.
 */

const SOFTWARE_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../../../package.json", import.meta.url), "utf8")) as { version: string };
    return pkg.version;
  } catch {
    return "dev";
  }
})();

const LOG_FLAG: FlagSpec = { name: "log-level", value: "LEVEL", help: "trace, debug, info, warn, error or silent", default: "info", env: "GATEWAY_LOG_LEVEL" };

const CONTROL_PLANE_FLAGS: FlagSpec[] = [
  { name: "listen", value: "HOST:PORT", help: "Address for the config API (Connect, gRPC, gRPC-Web, REST) and data-plane streams", default: "127.0.0.1:8080" },
  { name: "data-dir", value: "DIR", help: "Directory of the embedded store, admin key and node token", default: "./data" },
  { name: "admin-key", value: "K", help: "Admin API key (otherwise generated on first start into DIR/admin.key)", env: "GATEWAY_ADMIN_KEY" },
  { name: "node-token", value: "T", help: "Token data planes must present (otherwise generated into DIR/node.token)", env: "GATEWAY_NODE_TOKEN" },
  LOG_FLAG,
];

const DATA_PLANE_FLAGS: FlagSpec[] = [
  { name: "listen", value: "HOST:PORT", help: "Address of the HTTP proxy", default: "127.0.0.1:8081" },
  { name: "control-plane", value: "URL", help: "Control-plane URL; repeat (or comma-separate) for several replicas", required: true, repeated: true },
  { name: "node-id", value: "ID", help: "Unique id of this data plane", default: os.hostname() },
  { name: "token", value: "T", help: "Node token of the control plane", env: "GATEWAY_NODE_TOKEN" },
  { name: "label", value: "K=V", help: "Label reported to the control plane; repeatable", repeated: true },
  { name: "drain-ms", value: "MS", help: "How long in-flight requests may finish after SIGTERM", default: "30000" },
  { name: "trusted-proxies", value: "CIDR[,CIDR]", help: "Proxies whose X-Forwarded-For is trusted for the client address; repeatable", repeated: true },
  { name: "geo-db", value: "PATH", help: "MaxMind-format (.mmdb) country database for geo_country" },
  { name: "snapshot-cache", value: "PATH", help: "File keeping the last applied snapshot (written atomically), to serve at start without a control plane" },
  LOG_FLAG,
];

const ALL_IN_ONE_FLAGS: FlagSpec[] = [
  { name: "listen", value: "HOST:PORT", help: "Address of the control plane", default: "127.0.0.1:8080" },
  { name: "proxy-listen", value: "HOST:PORT", help: "Address of the data plane's proxy", default: "127.0.0.1:8081" },
  { name: "data-dir", value: "DIR", help: "Directory of the embedded store", default: "./data" },
  { name: "admin-key", value: "K", help: "Admin API key (otherwise generated on first start)", env: "GATEWAY_ADMIN_KEY" },
  LOG_FLAG,
];

const USAGE = `Usage: gateway <command> [flags]

Commands:
  all-in-one      A control plane and one data plane in one process, on the embedded file store
  control-plane   The control plane: config API and snapshot streams to data planes
  data-plane      A data-plane proxy that follows a control plane

Run "gateway <command> --help" for the flags of a command.
`;

function one(flags: ParsedFlags, name: string): string | undefined {
  return flags.get(name)?.[0];
}

function logger(flags: ParsedFlags, name: string): Logger {
  const level = one(flags, "log-level") ?? "info";
  if (!["trace", "debug", "info", "warn", "error", "fatal", "silent"].includes(level)) {
    throw new UsageError(`--log-level: must be trace, debug, info, warn, error or silent, got "${level}"`);
  }
  return pino({ level, base: { pid: process.pid, component: name } });
}

function positiveInt(flag: string, value: string): number {
  if (!/^\d+$/.test(value)) throw new UsageError(`--${flag}: must be a non-negative integer, got "${value}"`);
  return Number(value);
}

/** Waits for SIGTERM/SIGINT, then runs `stop` and exits 0 (1 if stopping failed). */
function onSignals(log: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => handler("SIGTERM"));
  process.on("SIGINT", () => handler("SIGINT"));
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case "control-plane": {
      const flags = parseFlags(command, rest, CONTROL_PLANE_FLAGS);
      if (flags === "help") return void process.stdout.write(helpText("gateway control-plane [flags]", "Runs the control plane.", CONTROL_PLANE_FLAGS));
      const log = logger(flags, "control-plane");
      const { host, port } = parseHostPort("listen", one(flags, "listen")!);
      const cp = await startControlPlane({ host, port, dataDir: one(flags, "data-dir")!, adminKey: one(flags, "admin-key"), nodeToken: one(flags, "node-token"), log });
      onSignals(log, () => cp.close());
      return;
    }
    case "data-plane": {
      const flags = parseFlags(command, rest, DATA_PLANE_FLAGS);
      if (flags === "help") return void process.stdout.write(helpText("gateway data-plane [flags]", "Runs a data-plane proxy.", DATA_PLANE_FLAGS));
      const log = logger(flags, "data-plane");
      const { host, port } = parseHostPort("listen", one(flags, "listen")!);
      const urls = (flags.get("control-plane") ?? []).flatMap((v) => v.split(",")).map((u) => parseUrl("control-plane", u.trim()));
      const token = one(flags, "token");
      if (token === undefined) throw new UsageError("data-plane: --token is required (the control plane's node token; env GATEWAY_NODE_TOKEN)");
      const labels: Record<string, string> = {};
      for (const l of flags.get("label") ?? []) {
        const eq = l.indexOf("=");
        if (eq <= 0) throw new UsageError(`--label: expected K=V, got "${l}"`);
        labels[l.slice(0, eq)] = l.slice(eq + 1);
      }
      const dp = await startDataPlane({
        host,
        port,
        controlPlanes: urls,
        nodeId: one(flags, "node-id")!,
        token,
        labels,
        softwareVersion: SOFTWARE_VERSION,
        drainMs: positiveInt("drain-ms", one(flags, "drain-ms")!),
        trustedProxies: (flags.get("trusted-proxies") ?? []).flatMap((v) => v.split(",")).map((v) => v.trim()).filter((v) => v !== ""),
        geoDbPath: one(flags, "geo-db"),
        snapshotCachePath: one(flags, "snapshot-cache"),
        log,
      });
      onSignals(log, () => dp.close());
      return;
    }
    case "all-in-one": {
      const flags = parseFlags(command, rest, ALL_IN_ONE_FLAGS);
      if (flags === "help") return void process.stdout.write(helpText("gateway all-in-one [flags]", "Runs a control plane and one data plane in one process.", ALL_IN_ONE_FLAGS));
      const log = logger(flags, "all-in-one");
      const cpAddr = parseHostPort("listen", one(flags, "listen")!);
      const dpAddr = parseHostPort("proxy-listen", one(flags, "proxy-listen")!);
      const cp = await startControlPlane({ ...cpAddr, dataDir: one(flags, "data-dir")!, adminKey: one(flags, "admin-key"), log: log.child({ plane: "control" }) });
      const dp = await startDataPlane({
        ...dpAddr,
        controlPlanes: [cp.url],
        nodeId: `${os.hostname()}-local`,
        token: cp.nodeToken,
        softwareVersion: SOFTWARE_VERSION,
        log: log.child({ plane: "data" }),
      });
      onSignals(log, async () => {
        await dp.close();
        await cp.close();
      });
      return;
    }
    case undefined:
    case "--help":
    case "-h":
    case "help":
      process.stdout.write(USAGE);
      return;
    default:
      throw new UsageError(`unknown command "${command}" (expected all-in-one, control-plane or data-plane)`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) {
    process.stderr.write(`gateway: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`gateway: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

import { create } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  DiscoveryService,
  StreamRequestSchema,
  type FleetHealth,
  type Report,
  type StreamRequest,
} from "../../../proto/gen/gateway/v1/discovery_pb.js";
import type { Snapshot } from "../../../proto/gen/gateway/v1/snapshot_pb.js";
import { ResourceSet } from "./resources.js";

/** What the discovery client needs from the rest of the data plane. */
export interface DiscoveryHandlers {
  /** Applies a snapshot; throws (with a message for the NACK) to refuse it. */
  applySnapshot(snapshot: Snapshot): void;
  /** Version currently served (0 if none), sent in Hello so an up-to-date node gets no push. */
  appliedVersion(): bigint;
  /** A delta that does not apply to the served version (a full snapshot follows the NACK). */
  onDeltaRefused?(version: bigint, error: string): void;
  /** The fleet's verdicts and load. */
  onFleetHealth?(health: FleetHealth): void;
  /** Builds the periodic report. */
  buildReport?(): Report;
  /** Connection state changes, for logs, health endpoint and metrics. */
  onState?(state: { connected: boolean; url: string; error?: string }): void;
}

/** Options of the discovery client. */
export interface DiscoveryClientOptions {
  /** Control-plane URLs; tried in turn when one fails. */
  readonly urls: readonly string[];
  readonly nodeId: string;
  readonly token: string;
  readonly labels?: Record<string, string>;
  readonly softwareVersion: string;
  readonly reportIntervalMs?: number;
  readonly minBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

/**
 * The data plane's end of the discovery stream: Hello, then apply each push and answer ACK/NACK,
 * send reports, and when the stream breaks reconnect with jittered exponential backoff (to the
 * next URL), resyncing from the version still being served. It never stops on its own: a data plane
 * keeps serving its last good snapshot for as long as the control plane is away.
 */
export class DiscoveryClient {
  private readonly clients: Client<typeof DiscoveryService>[];
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private connected = false;
  private lastError = "";
  private lastContactMs = 0;
  /** What the node serves, as resources: the base for deltas. */
  private resources = ResourceSet.empty();
  /** Sends a report on the current stream; undefined while no stream is open. */
  private sendReport: (() => void) | undefined;
  /** Pending coalesced reportNow(). */
  private reportSoon: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: DiscoveryClientOptions,
    private readonly handlers: DiscoveryHandlers,
  ) {
    if (opts.urls.length === 0) throw new Error("at least one control-plane URL is required");
    this.clients = opts.urls.map((baseUrl) =>
      createClient(
        DiscoveryService,
        createGrpcTransport({
          baseUrl,
          // HTTP/2 keep-alive pings are off by default; without them a dead control plane behind a
          // silent network is only noticed by the next write.
          pingIntervalMs: 10_000,
          pingTimeoutMs: 5_000,
          readMaxBytes: 512 * 1024 * 1024,
        }),
      ),
    );
  }

  /** Seeds the resources from a snapshot served before connecting (e.g. a snapshot cache file). */
  seed(snapshot: Snapshot): void {
    this.resources = ResourceSet.of(snapshot);
  }

  /** Starts the connect loop. */
  start(): void {
    this.running ??= this.loop();
  }

  /** Connection status for health endpoints. */
  status(): { connected: boolean; lastError: string; lastContactMs: number } {
    return { connected: this.connected, lastError: this.lastError, lastContactMs: this.lastContactMs };
  }

  /**
   * Sends a report now instead of at the next interval (a target changed state), coalescing the
   * calls of the next few milliseconds into one report, so a burst of changes sends one message.
   * No-op while no stream is open (the next stream's reports carry the state anyway).
   */
  reportNow(): void {
    if (this.sendReport === undefined || this.reportSoon !== undefined) return;
    this.reportSoon = setTimeout(() => {
      this.reportSoon = undefined;
      this.sendReport?.();
    }, 20);
  }

  /** Stops the loop and closes the stream. */
  async close(): Promise<void> {
    if (this.reportSoon !== undefined) clearTimeout(this.reportSoon);
    this.reportSoon = undefined;
    this.abort.abort();
    await this.running?.catch(() => undefined);
  }

  private async loop(): Promise<void> {
    const min = this.opts.minBackoffMs ?? 200;
    const max = this.opts.maxBackoffMs ?? 10_000;
    let failures = 0;
    let index = 0;
    let lastReported = "";
    let lastReportedAt = 0;
    while (!this.abort.signal.aborted) {
      const url = this.opts.urls[index % this.opts.urls.length];
      const client = this.clients[index % this.clients.length];
      const gotSnapshot = await this.session(client, url).catch((err: unknown) => {
        this.lastError = err instanceof Error ? err.message : String(err);
        return false;
      });
      if (this.connected) {
        this.connected = false;
        lastReported = this.lastError;
        lastReportedAt = Date.now();
        this.handlers.onState?.({ connected: false, url, error: this.lastError });
      } else if (this.lastError !== lastReported || Date.now() - lastReportedAt > 30_000) {
        // Never connected (wrong token, control plane down at start) or still away: say so, but
        // only when the reason changes or every 30 s, not on every backoff attempt.
        lastReported = this.lastError;
        lastReportedAt = Date.now();
        this.handlers.onState?.({ connected: false, url, error: this.lastError });
      }
      if (this.abort.signal.aborted) break;
      // A session that got at least one push counts as success: restart backoff from the bottom.
      failures = gotSnapshot ? 0 : failures + 1;
      index++;
      // Full jitter: spreads reconnects of a whole fleet after a control-plane restart.
      const ceiling = Math.min(max, min * 2 ** Math.min(failures, 16));
      await sleep(Math.random() * ceiling, this.abort.signal);
    }
  }

  /** One stream's lifetime. Resolves true if at least one snapshot arrived. */
  private async session(client: Client<typeof DiscoveryService>, url: string): Promise<boolean> {
    const requests = createWritableIterable<StreamRequest>();
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort();
    this.abort.signal.addEventListener("abort", onAbort, { once: true });
    let reportTimer: NodeJS.Timeout | undefined;
    let got = false;
    const send = (msg: StreamRequest) => {
      // write() resolves when the transport consumed the message; a closed stream rejects, which
      // the response loop reports, so the rejection itself carries no news.
      requests.write(msg).catch(() => undefined);
    };
    try {
      send(
        create(StreamRequestSchema, {
          kind: {
            case: "hello",
            value: {
              nodeId: this.opts.nodeId,
              labels: this.opts.labels ?? {},
              softwareVersion: this.opts.softwareVersion,
              lastAppliedVersion: this.handlers.appliedVersion(),
            },
          },
        }),
      );
      const responses = client.stream(requests, {
        signal: ctrl.signal,
        headers: { authorization: `Bearer ${this.opts.token}` },
      });
      const interval = this.opts.reportIntervalMs ?? 5_000;
      if (this.handlers.buildReport !== undefined) {
        const build = this.handlers.buildReport;
        this.sendReport = () => send(create(StreamRequestSchema, { kind: { case: "report", value: build() } }));
        const tick = () => {
          send(create(StreamRequestSchema, { kind: { case: "report", value: build() } }));
          // Jitter keeps a fleet's reports from arriving in lockstep.
          reportTimer = setTimeout(tick, interval * (0.8 + Math.random() * 0.4));
        };
        reportTimer = setTimeout(tick, interval * Math.random());
      }
      for await (const res of responses) {
        this.lastContactMs = Date.now();
        if (!this.connected) {
          this.connected = true;
          this.lastError = "";
          this.handlers.onState?.({ connected: true, url });
        }
        switch (res.kind.case) {
          case "snapshot":
          case "delta": {
            const push = res.kind;
            const version = push.value.version;
            got = true;
            try {
              let next: ResourceSet;
              try {
                next = push.case === "snapshot" ? ResourceSet.of(push.value) : this.resources.apply(push.value);
              } catch (err) {
                // A delta from another base: the NACK makes the control plane send a full snapshot.
                this.handlers.onDeltaRefused?.(version, err instanceof Error ? err.message : String(err));
                throw err;
              }
              this.handlers.applySnapshot(push.case === "snapshot" ? push.value : next.snapshot());
              this.resources = next;
              send(create(StreamRequestSchema, { kind: { case: "ack", value: { version, nonce: res.nonce } } }));
            } catch (err) {
              send(
                create(StreamRequestSchema, {
                  kind: {
                    case: "nack",
                    value: {
                      version,
                      nonce: res.nonce,
                      error: err instanceof Error ? err.message : String(err),
                      appliedVersion: this.handlers.appliedVersion(),
                    },
                  },
                }),
              );
            }
            break;
          }
          case "fleetHealth":
            this.handlers.onFleetHealth?.(res.kind.value);
            break;
          default:
            break;
        }
      }
      this.lastError = "stream ended by the control plane";
      return got;
    } finally {
      this.sendReport = undefined;
      if (reportTimer !== undefined) clearTimeout(reportTimer);
      requests.close();
      ctrl.abort();
      this.abort.signal.removeEventListener("abort", onAbort);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Client traffic through data planes, counted by the target that answered (the `x-target` header
 * the harness's targets set). Requests are sequential, so counts are exact and reproducible: the
 * balancers are deterministic per data plane, and nothing else sends on that route.
 */
import { httpRequest, type HttpResponse } from "./http.js";

/** Options of {@link sendRequests}. */
export interface TrafficOptions {
  /** Request path and query (default "/"). */
  readonly path?: string;
  readonly method?: "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS";
  readonly headers?: Record<string, string>;
}

/** What a batch of requests produced. */
export interface TrafficResult {
  readonly total: number;
  /** Answers per target name (`x-target`), successful or not. */
  readonly byTarget: Record<string, number>;
  /** Answers per HTTP status. */
  readonly statuses: Record<number, number>;
  /** One line per request that was not 2xx or got no answer. */
  readonly failures: string[];
}

function emptyResult(): { total: number; byTarget: Record<string, number>; statuses: Record<number, number>; failures: string[] } {
  return { total: 0, byTarget: {}, statuses: {}, failures: [] };
}

function record(into: ReturnType<typeof emptyResult>, url: string, res: HttpResponse | Error): void {
  into.total++;
  if (res instanceof Error) {
    into.failures.push(`${url}: ${res.message}`);
    return;
  }
  into.statuses[res.status] = (into.statuses[res.status] ?? 0) + 1;
  const t = res.headers["x-target"];
  const name = Array.isArray(t) ? t[0] : t;
  if (name !== undefined) into.byTarget[name] = (into.byTarget[name] ?? 0) + 1;
  if (res.status < 200 || res.status > 299) into.failures.push(`${url}: ${res.status} ${res.text.slice(0, 200)}`);
}

/** Sends `n` sequential requests to a data plane and counts the answers by target. */
export async function sendRequests(baseUrl: string, n: number, opts: TrafficOptions = {}): Promise<TrafficResult> {
  const out = emptyResult();
  const url = `${baseUrl}${opts.path ?? "/"}`;
  for (let i = 0; i < n; i++) {
    const res = await httpRequest(url, { method: opts.method ?? "GET", headers: opts.headers }).catch((err: Error) => err);
    record(out, url, res);
  }
  return out;
}

/**
 * Traffic that keeps flowing until stopped: one request at a time, taking the data planes in turn.
 * Used to show that data planes keep serving while the control plane is away.
 */
export class TrafficLoop {
  private readonly result = emptyResult();
  private stopped = false;
  private readonly done: Promise<void>;
  private readonly waiters = new Set<() => void>();

  constructor(
    private readonly baseUrls: readonly string[],
    private readonly opts: TrafficOptions = {},
  ) {
    this.done = this.run();
  }

  /** Requests answered (or failed) so far. */
  get completed(): number {
    return this.result.total;
  }

  /** Failures so far. */
  get failures(): readonly string[] {
    return this.result.failures;
  }

  /** Resolves once `n` more requests than now have completed. */
  waitForMore(n: number, timeoutMs = 30_000): Promise<void> {
    const goal = this.result.total + n;
    return new Promise<void>((resolve, reject) => {
      const check = () => {
        if (this.result.total < goal) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`traffic loop: timed out after ${timeoutMs} ms waiting for ${n} more requests (at ${this.result.total}/${goal})`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Stops after the request in flight and returns everything counted. */
  async stop(): Promise<TrafficResult> {
    this.stopped = true;
    await this.done;
    return this.result;
  }

  private async run(): Promise<void> {
    for (let i = 0; !this.stopped; i++) {
      const url = `${this.baseUrls[i % this.baseUrls.length]}${this.opts.path ?? "/"}`;
      const res = await httpRequest(url, { method: this.opts.method ?? "GET", headers: this.opts.headers }).catch((err: Error) => err);
      record(this.result, url, res);
      for (const w of this.waiters) w();
    }
  }
}

/**
 * The HTTP client every e2e helper uses: one undici Agent owned by the harness, closed at teardown
 * ({@link closeHttpClients}), so no keep-alive connection outlives a test file. (Connections a test
 * deliberately leaves open belong to that test.)
 */
import { Agent, request, type Dispatcher } from "undici";

let agent: Agent | undefined;

/** The shared keep-alive agent (created on first use). */
export function httpAgent(): Agent {
  agent ??= new Agent({ keepAliveTimeout: 10_000, connect: { timeout: 5_000 } });
  return agent;
}

/** Closes the shared agent's connections (the shared teardown calls this). */
export async function closeHttpClients(): Promise<void> {
  const a = agent;
  agent = undefined;
  await a?.close();
}

/** A response with its body read. */
export interface HttpResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. Typed loosely for assertions. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly json: any;
}

/** Options of {@link httpRequest}. */
export interface HttpRequestOptions {
  readonly method?: Dispatcher.HttpMethod;
  readonly headers?: Record<string, string>;
  /** A string is sent as is; anything else as JSON (with content-type application/json). */
  readonly body?: unknown;
}

/** Sends one request with the shared agent and reads the whole response. */
export async function httpRequest(url: string, opts: HttpRequestOptions = {}): Promise<HttpResponse> {
  const headers: Record<string, string> = { ...opts.headers };
  let body: string | undefined;
  if (typeof opts.body === "string") body = opts.body;
  else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  }
  const res = await request(url, { method: opts.method ?? "GET", headers, body, dispatcher: httpAgent() });
  const text = await res.body.text();
  let json: unknown;
  if (text !== "") {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

/** A header's value as one string (undefined when absent). */
export function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v.join(", ") : v;
}

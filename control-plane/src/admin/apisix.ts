/**
 * APISIX compatibility for REST rule bodies: the traffic-split plugin's inline upstreams (seed 003)
 * are accepted verbatim inside `traffic_split.rules[].weighted_upstreams[].upstream` and rewritten
 * into our Upstream JSON before the body is decoded into protobuf.
 *
 * Only the JSON shape changes here; every value is still validated afterwards by decodeJson and by
 * validateUpstream / compileSnapshot (the same code that runs on the data plane). What this module
 * refuses itself is what would otherwise be lost or misread in translation (a node key that is not
 * `host[:port]`, an algorithm we do not have), with an error naming the APISIX field the user wrote.
 *
 * Translation (APISIX → ours):
 * - `nodes` → `targets`. Either a hash `{"host:port": weight}` (IPv6 in brackets, `"[::1]:80"`) or
 *   an array of `{host, port?, weight, priority?, metadata?}`. A missing port is 80, or 443 when
 *   `scheme` is "https". APISIX prefers HIGHER `priority` values and allows negative ones; ours
 *   prefers LOWER values from 0, so priorities are mirrored (`max - priority`), which keeps the
 *   failover order.
 * - `type`: "roundrobin" (the default) is weighted in APISIX, so it becomes "weighted-round-robin"
 *   when the nodes' positive weights differ and "round-robin" when they are all equal (the same
 *   rotation); "chash" → "consistent-hash"; "least_conn" → "least-connections". "ewma" is refused.
 * - `hash_on` + `key` (chash only, ignored otherwise as in APISIX): "header"/"cookie" with the
 *   name in `key`; "vars" (the default) with an nginx variable in `key`: `remote_addr` → client IP,
 *   `arg_<name>` → query, `http_<name>` → header (underscores read as dashes, as nginx does),
 *   `cookie_<name>` → cookie. "consumer" and "vars_combinations" are refused.
 * - `timeout: {connect, send, read}` in seconds → `timeouts: {connect_ms, send_ms, read_ms}`.
 * - `retries` (a number) → `retries.count`; `retry_timeout` (seconds) → `retries.timeout_ms`.
 * - `labels` (and `desc`) → `metadata`. `name`, `scheme`, `pass_host`, `upstream_host` are the same.
 * - `name` is optional in APISIX and required by us: a missing one becomes `split-<i>-<j>`.
 * - A numeric `upstream_id` (APISIX ids may be integers) is read as its decimal string.
 * Fields APISIX itself does not support in an inline split upstream (`checks`, `service_name`,
 * `discovery_type`, ...) are refused with the same advice APISIX gives: create an upstream and
 * reference it with `upstream_id`.
 *
 * An upstream already in our shape (`targets`, `algorithm`, `timeouts`, `hash_on` as an object)
 * passes through untouched; mixing the two spellings of one setting is refused.
 */
import { ConfigError } from "../../../data-plane/src/config/errors.js";

type Json = Record<string, unknown>;

/** Keys only an APISIX-shaped upstream has; any of them makes the upstream be translated. */
const APISIX_ONLY = new Set(["nodes", "type", "timeout", "key", "retry_timeout", "labels", "desc"]);

/** APISIX upstream fields with no inline equivalent here (APISIX refuses most of them inline too). */
const UNSUPPORTED_INLINE = new Set([
  "checks",
  "service_name",
  "discovery_type",
  "discovery_args",
  "keepalive_pool",
  "tls",
  "create_time",
  "update_time",
  "id",
]);

/** Fields of an APISIX node in array form. */
const NODE_FIELDS = new Set(["host", "port", "weight", "priority", "metadata"]);

/** APISIX `type` → our algorithm. "roundrobin" is resolved against the weights (see the module doc). */
const TYPES: Readonly<Record<string, string>> = {
  roundrobin: "roundrobin",
  chash: "consistent-hash",
  least_conn: "least-connections",
};

/** Longest timeout our upstreams accept, in seconds (validate.ts caps timeouts at one hour). */
const MAX_TIMEOUT_S = 3600;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  return JSON.stringify(value);
}

/** The value under the snake_case key or its lowerCamelCase twin (proto3 JSON accepts both). */
function pick(o: Json, snake: string): { key: string; value: unknown } | undefined {
  if (snake in o) return { key: snake, value: o[snake] };
  const camel = snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
  if (camel !== snake && camel in o) return { key: camel, value: o[camel] };
  return undefined;
}

/**
 * Rewrites the APISIX-shaped parts of a REST rule body (see the module doc) and returns the new
 * body; the input is never mutated. Anything that is not a rule body with a traffic_split is
 * returned as is, for decodeJson to judge. Throws ConfigError naming the APISIX field, relative to
 * the rule body (`traffic_split.rules[0].weighted_upstreams[1].upstream.nodes["10.0.0.1:x"]`).
 */
export function fromApisixRule(body: unknown): unknown {
  if (!isObject(body)) return body;
  const split = pick(body, "traffic_split");
  if (split === undefined || !isObject(split.value)) return body;
  const rules = split.value.rules;
  if (!Array.isArray(rules)) return body;
  const newRules = rules.map((rule: unknown, i) => {
    if (!isObject(rule)) return rule;
    const wus = pick(rule, "weighted_upstreams");
    if (wus === undefined || !Array.isArray(wus.value)) return rule;
    const entries = wus.value.map((entry: unknown, j) => fromApisixWeightedUpstream(entry, i, j));
    return { ...rule, [wus.key]: entries };
  });
  return { ...body, [split.key]: { ...split.value, rules: newRules } };
}

function fromApisixWeightedUpstream(entry: unknown, i: number, j: number): unknown {
  if (!isObject(entry)) return entry;
  const field = `traffic_split.rules[${i}].weighted_upstreams[${j}]`;
  let out: Json = entry;
  const id = pick(entry, "upstream_id");
  if (id !== undefined && typeof id.value === "number" && Number.isSafeInteger(id.value) && id.value >= 0) {
    out = { ...out, [id.key]: String(id.value) };
  }
  if (isObject(entry.upstream) && isApisixUpstream(entry.upstream)) {
    out = { ...out, upstream: fromApisixUpstream(entry.upstream, `${field}.upstream`, `split-${i}-${j}`) };
  }
  return out;
}

/** Whether an upstream object is written in APISIX's shape rather than ours. */
export function isApisixUpstream(u: Json): boolean {
  for (const k of Object.keys(u)) {
    if (APISIX_ONLY.has(k) || UNSUPPORTED_INLINE.has(k)) return true;
  }
  return typeof u.hash_on === "string" || typeof u.retries === "number";
}

/**
 * Translates one APISIX upstream object into our Upstream JSON (snake_case). `field` is the path
 * of the object, used in errors; `defaultName` fills APISIX's optional `name`.
 */
export function fromApisixUpstream(u: Json, field: string, defaultName = "inline"): Json {
  const at = (f: string) => `${field}.${f}`;
  for (const [apisix, ours] of [
    ["nodes", "targets"],
    ["type", "algorithm"],
    ["timeout", "timeouts"],
  ] as const) {
    if (apisix in u && pick(u, ours) !== undefined) {
      throw new ConfigError(at(apisix), `set either ${apisix} (APISIX) or ${ours}, not both`);
    }
  }
  for (const k of Object.keys(u)) {
    if (UNSUPPORTED_INLINE.has(k)) {
      throw new ConfigError(
        at(k),
        "is not supported in an inline split upstream: create an upstream (POST /api/v1/tenants/{tenant_id}/upstreams) and reference it with upstream_id",
      );
    }
  }

  const out: Json = {};
  // Our own fields (name, scheme, pass_host, upstream_host, metadata, health_check, ...) pass through.
  for (const [k, v] of Object.entries(u)) {
    if (!APISIX_ONLY.has(k) && k !== "hash_on" && k !== "retries") out[k] = v;
  }
  if (u.name === undefined) out.name = defaultName;

  const scheme = typeof u.scheme === "string" ? u.scheme : "http";
  if ("nodes" in u) out.targets = nodesToTargets(u.nodes, at("nodes"), scheme === "https" ? 443 : 80);

  const type = "type" in u ? u.type : "algorithm" in u ? undefined : "roundrobin";
  if (type !== undefined) {
    if (typeof type !== "string" || !(type in TYPES)) {
      const hint = type === "ewma" ? ' ("ewma" is not supported)' : "";
      throw new ConfigError(at("type"), `must be one of roundrobin, chash or least_conn, got ${describe(type)}${hint}`);
    }
    out.algorithm = type === "roundrobin" ? roundRobinAlgorithm(out.targets) : TYPES[type];
  }

  if (type === "chash") {
    out.hash_on = hashOn(u, field);
  } else if (isObject(u.hash_on)) {
    out.hash_on = u.hash_on; // ours; validateUpstream checks it
  }
  // APISIX ignores a string hash_on and key unless type is chash: so do we.

  if ("timeout" in u) out.timeouts = timeouts(u.timeout, at("timeout"));

  const retries: Json = isObject(u.retries) ? { ...u.retries } : {};
  if (typeof u.retries === "number") {
    if (!Number.isSafeInteger(u.retries) || u.retries < 0) throw new ConfigError(at("retries"), `must be a non-negative integer, got ${describe(u.retries)}`);
    retries.count = u.retries;
  } else if (u.retries !== undefined && !isObject(u.retries)) {
    throw new ConfigError(at("retries"), `must be a non-negative integer, got ${describe(u.retries)}`);
  }
  if ("retry_timeout" in u) retries.timeout_ms = seconds(u.retry_timeout, at("retry_timeout"), true);
  if (u.retries !== undefined || "retry_timeout" in u) out.retries = retries;

  if ("labels" in u || "desc" in u) {
    const metadata: Json = isObject(u.metadata) ? { ...u.metadata } : {};
    if ("labels" in u) {
      if (!isObject(u.labels)) throw new ConfigError(at("labels"), `must be an object of strings, got ${describe(u.labels)}`);
      Object.assign(metadata, u.labels);
    }
    if ("desc" in u) metadata.desc = u.desc;
    out.metadata = metadata;
  }
  return out;
}

/** "round-robin" when every positive weight is the same (plain rotation), else "weighted-round-robin". */
function roundRobinAlgorithm(targets: unknown): string {
  if (!Array.isArray(targets)) return "round-robin";
  const weights = new Set<number>();
  for (const t of targets) {
    const w = (t as { weight?: number }).weight ?? 1;
    if (w > 0) weights.add(w);
  }
  return weights.size > 1 ? "weighted-round-robin" : "round-robin";
}

interface Node {
  host: string;
  port: number;
  weight: number;
  priority: number;
  metadata?: unknown;
}

function nodesToTargets(nodes: unknown, field: string, defaultPort: number): Json[] {
  const list: Node[] = [];
  if (isObject(nodes)) {
    for (const [key, weight] of Object.entries(nodes)) {
      const at = `${field}[${JSON.stringify(key)}]`;
      const { host, port } = parseHostPort(key, at, defaultPort);
      list.push({ host, port, weight: nodeWeight(weight, at), priority: 0 });
    }
  } else if (Array.isArray(nodes)) {
    nodes.forEach((n: unknown, k) => {
      const at = `${field}[${k}]`;
      if (!isObject(n)) throw new ConfigError(at, `must be an object {host, port, weight, priority}, got ${describe(n)}`);
      for (const key of Object.keys(n)) if (!NODE_FIELDS.has(key)) throw new ConfigError(`${at}.${key}`, "unknown field");
      if (typeof n.host !== "string" || n.host === "") throw new ConfigError(`${at}.host`, `is required and must be a string, got ${describe(n.host)}`);
      const host = n.host.startsWith("[") && n.host.endsWith("]") ? n.host.slice(1, -1) : n.host;
      let port = defaultPort;
      if (n.port !== undefined) {
        if (typeof n.port !== "number" || !Number.isInteger(n.port) || n.port < 1 || n.port > 65535) {
          throw new ConfigError(`${at}.port`, `must be an integer from 1 to 65535, got ${describe(n.port)}`);
        }
        port = n.port;
      }
      if (n.weight === undefined) throw new ConfigError(`${at}.weight`, "is required");
      let priority = 0;
      if (n.priority !== undefined) {
        if (typeof n.priority !== "number" || !Number.isSafeInteger(n.priority)) {
          throw new ConfigError(`${at}.priority`, `must be an integer, got ${describe(n.priority)}`);
        }
        priority = n.priority;
      }
      list.push({ host, port, weight: nodeWeight(n.weight, `${at}.weight`), priority, metadata: n.metadata });
    });
  } else {
    throw new ConfigError(field, `must be an object {"host:port": weight} or an array of {host, port, weight}, got ${describe(nodes)}`);
  }
  if (list.length === 0) throw new ConfigError(field, "must not be empty");

  const seen = new Set<string>();
  list.forEach((n, k) => {
    const id = n.host.includes(":") ? `[${n.host}]:${n.port}` : `${n.host}:${n.port}`;
    if (seen.has(id)) throw new ConfigError(Array.isArray(nodes) ? `${field}[${k}]` : field, `duplicate node ${id}`);
    seen.add(id);
  });

  // APISIX: higher priority first, any integer. Ours: lower first, from 0. Mirror around the maximum.
  const top = Math.max(...list.map((n) => n.priority));
  return list.map((n) => {
    const t: Json = { host: n.host, port: n.port, weight: n.weight };
    if (top - n.priority !== 0) t.priority = top - n.priority;
    if (n.metadata !== undefined) t.metadata = n.metadata;
    return t;
  });
}

function nodeWeight(w: unknown, field: string): number {
  if (typeof w !== "number" || !Number.isSafeInteger(w) || w < 0) {
    throw new ConfigError(field, `weight must be a non-negative integer, got ${describe(w)}`);
  }
  return w;
}

/** "host:port", "host", "[v6]:port" or "[v6]" (APISIX's node keys). */
function parseHostPort(key: string, field: string, defaultPort: number): { host: string; port: number } {
  let host: string;
  let portText: string | undefined;
  if (key.startsWith("[")) {
    const close = key.indexOf("]");
    if (close < 0) throw new ConfigError(field, `invalid node "${key}": missing "]" after an IPv6 address`);
    host = key.slice(1, close);
    const rest = key.slice(close + 1);
    if (rest !== "" && !rest.startsWith(":")) throw new ConfigError(field, `invalid node "${key}": expected ":port" after "]"`);
    portText = rest === "" ? undefined : rest.slice(1);
  } else {
    const colons = key.split(":").length - 1;
    if (colons > 1) throw new ConfigError(field, `invalid node "${key}": an IPv6 address must be in brackets, e.g. "[::1]:80"`);
    const colon = key.indexOf(":");
    host = colon < 0 ? key : key.slice(0, colon);
    portText = colon < 0 ? undefined : key.slice(colon + 1);
  }
  if (host === "") throw new ConfigError(field, `invalid node "${key}": the host is empty`);
  if (portText === undefined) return { host, port: defaultPort };
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
  if (!(port >= 1 && port <= 65535)) throw new ConfigError(field, `invalid node "${key}": the port must be an integer from 1 to 65535`);
  return { host, port };
}

/** APISIX `hash_on` + `key` of a chash upstream → our HashOn JSON. */
function hashOn(u: Json, field: string): Json {
  const raw = u.hash_on ?? "vars";
  if (isObject(raw)) {
    if (u.key !== undefined) throw new ConfigError(`${field}.key`, "set either key (with an APISIX hash_on string) or a hash_on object, not both");
    return raw;
  }
  const key = u.key;
  const needKey = (): string => {
    if (typeof key !== "string" || key === "") throw new ConfigError(`${field}.key`, `is required for type "chash" with hash_on ${describe(raw)}, got ${describe(key)}`);
    return key;
  };
  switch (raw) {
    case "header":
      return { source: "header", name: needKey() };
    case "cookie":
      return { source: "cookie", name: needKey() };
    case "vars": {
      const v = needKey();
      if (v === "remote_addr") return { source: "client_ip" };
      const m = /^(arg|http|cookie)_(.+)$/.exec(v);
      if (m !== null) {
        if (m[1] === "arg") return { source: "query", name: m[2] };
        if (m[1] === "cookie") return { source: "cookie", name: m[2] };
        return { source: "header", name: m[2].replaceAll("_", "-") };
      }
      throw new ConfigError(`${field}.key`, `hashing on the nginx variable "${v}" is not supported: use remote_addr, arg_<name>, http_<name> or cookie_<name>`);
    }
    case "consumer":
      throw new ConfigError(`${field}.hash_on`, '"consumer" is not supported: hash on a verified JWT claim instead, e.g. {"source": "jwt_claim", "name": "sub"}');
    case "vars_combinations":
      throw new ConfigError(`${field}.hash_on`, '"vars_combinations" is not supported: hash on one header, cookie, query parameter, claim or the client address');
    default:
      throw new ConfigError(`${field}.hash_on`, `must be one of vars, header or cookie (APISIX), or an object {source, name}, got ${describe(raw)}`);
  }
}

function timeouts(t: unknown, field: string): Json {
  if (!isObject(t)) throw new ConfigError(field, `must be an object {connect, send, read} in seconds, got ${describe(t)}`);
  const out: Json = {};
  for (const [k, v] of Object.entries(t)) {
    if (k !== "connect" && k !== "send" && k !== "read") throw new ConfigError(`${field}.${k}`, "unknown field (expected connect, send or read, in seconds)");
    out[`${k}_ms`] = seconds(v, `${field}.${k}`, false);
  }
  return out;
}

/** Seconds (fractions allowed, as APISIX does) → whole milliseconds. */
function seconds(v: unknown, field: string, allowZero: boolean): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
    throw new ConfigError(field, `must be a ${allowZero ? "non-negative" : "positive"} number of seconds, got ${describe(v)}`);
  }
  if (v > MAX_TIMEOUT_S) throw new ConfigError(field, `must be at most ${MAX_TIMEOUT_S} seconds, got ${v}`);
  const ms = Math.round(v * 1000);
  if (ms === 0 && !allowZero) throw new ConfigError(field, `must be at least 0.001 seconds, got ${v}`);
  return ms;
}

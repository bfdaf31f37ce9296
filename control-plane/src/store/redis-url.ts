/**
 * Parses the `--store` URL of a Redis-backed configuration store into what ioredis needs:
 *
 *   redis://[[user]:password@]host[:port][/db]          one server (or a Sentinel-less primary)
 *   rediss://...                                        the same over TLS
 *   redis+cluster://[[user]:password@]host[:port][,host[:port]...]   seed nodes of a Redis Cluster
 *   rediss+cluster://...                                a cluster over TLS
 *
 * Node's URL parser cannot read a comma-separated host list, so this is parsed by hand; errors name
 * the part that is wrong. The password never appears in {@link RedisTarget.display}, which is what
 * logs and error messages show.
 */

/** One host of a Redis URL. */
export interface RedisNode {
  readonly host: string;
  readonly port: number;
}

/** A parsed Redis URL. */
export interface RedisTarget {
  /** Seed nodes of a Redis Cluster (the cluster client discovers the rest) instead of one server. */
  readonly cluster: boolean;
  readonly tls: boolean;
  /** One node for a single server; one or more seeds for a cluster. */
  readonly nodes: readonly RedisNode[];
  readonly username?: string;
  readonly password?: string;
  /** Logical database; always 0 on a cluster, which has no others. */
  readonly db: number;
  /** The URL with the password replaced by `***`, for logs and error messages. */
  readonly display: string;
}

/** A `--store` URL that cannot be used, with the reason. */
export class RedisUrlError extends Error {
  constructor(
    readonly url: string,
    reason: string,
  ) {
    super(`store URL ${redact(url)}: ${reason}`);
    this.name = "RedisUrlError";
  }
}

const SCHEMES: Record<string, { cluster: boolean; tls: boolean }> = {
  "redis:": { cluster: false, tls: false },
  "rediss:": { cluster: false, tls: true },
  "redis+cluster:": { cluster: true, tls: false },
  "rediss+cluster:": { cluster: true, tls: true },
};

const DEFAULT_PORT = 6379;

/** Whether `url` names a Redis store (any of the schemes above), as opposed to the file store. */
export function isRedisUrl(url: string): boolean {
  const colon = url.indexOf("://");
  return colon > 0 && Object.hasOwn(SCHEMES, url.slice(0, colon + 1).toLowerCase());
}

/** Parses a Redis store URL; throws RedisUrlError naming what is wrong. */
export function parseRedisUrl(url: string): RedisTarget {
  const sep = url.indexOf("://");
  const scheme = sep > 0 ? url.slice(0, sep + 1).toLowerCase() : "";
  const kind = SCHEMES[scheme];
  if (kind === undefined) {
    throw new RedisUrlError(url, "expected redis://, rediss://, redis+cluster:// or rediss+cluster://");
  }
  let rest = url.slice(sep + 3);
  if (/[?#]/.test(rest)) throw new RedisUrlError(url, "query strings and fragments are not supported");

  let username: string | undefined;
  let password: string | undefined;
  const at = rest.lastIndexOf("@");
  if (at !== -1) {
    const userinfo = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = userinfo.indexOf(":");
    const user = colon === -1 ? userinfo : userinfo.slice(0, colon);
    const pass = colon === -1 ? undefined : userinfo.slice(colon + 1);
    try {
      if (user !== "") username = decodeURIComponent(user);
      if (pass !== undefined && pass !== "") password = decodeURIComponent(pass);
    } catch {
      throw new RedisUrlError(url, "user or password: bad percent-encoding");
    }
    // redis://secret@host is how many tools write a password without a user (as redis-cli does).
    if (pass === undefined && username !== undefined) {
      password = username;
      username = undefined;
    }
  }

  let db = 0;
  const slash = rest.indexOf("/");
  if (slash !== -1) {
    const path = rest.slice(slash + 1);
    rest = rest.slice(0, slash);
    if (path !== "") {
      if (!/^(0|[1-9][0-9]{0,4})$/.test(path)) throw new RedisUrlError(url, `database: expected a number, got "${path}"`);
      db = Number(path);
      if (kind.cluster && db !== 0) throw new RedisUrlError(url, "database: a Redis Cluster has only database 0");
    }
  }

  if (rest === "") throw new RedisUrlError(url, "host: missing");
  const nodes = rest.split(",").map((part, i) => parseNode(url, part.trim(), i));
  if (!kind.cluster && nodes.length > 1) {
    throw new RedisUrlError(url, `${nodes.length} hosts given: use redis+cluster:// for the seed nodes of a Redis Cluster`);
  }
  return { ...kind, nodes, username, password, db, display: redact(url) };
}

function parseNode(url: string, text: string, index: number): RedisNode {
  const where = `host[${index}]`;
  let host: string;
  let portText: string | undefined;
  if (text.startsWith("[")) {
    const end = text.indexOf("]");
    if (end === -1) throw new RedisUrlError(url, `${where}: unterminated [IPv6 address]`);
    host = text.slice(1, end);
    const after = text.slice(end + 1);
    if (after !== "" && !after.startsWith(":")) throw new RedisUrlError(url, `${where}: unexpected "${after}" after the address`);
    portText = after === "" ? undefined : after.slice(1);
  } else {
    const colon = text.lastIndexOf(":");
    host = colon === -1 ? text : text.slice(0, colon);
    portText = colon === -1 ? undefined : text.slice(colon + 1);
  }
  if (host === "") throw new RedisUrlError(url, `${where}: missing`);
  let port = DEFAULT_PORT;
  if (portText !== undefined) {
    port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 1 && port <= 65535)) throw new RedisUrlError(url, `${where}: port must be 1-65535, got "${portText}"`);
  }
  return { host, port };
}

/** The URL with its password (if any) replaced by `***`; userinfo is found as parseRedisUrl finds it. */
function redact(url: string): string {
  const sep = url.indexOf("://");
  if (sep === -1) return url;
  const rest = url.slice(sep + 3);
  const at = rest.lastIndexOf("@");
  if (at === -1) return url;
  const userinfo = rest.slice(0, at);
  const colon = userinfo.indexOf(":");
  const user = colon === -1 ? "" : userinfo.slice(0, colon);
  return `${url.slice(0, sep + 3)}${user}:***@${rest.slice(at + 1)}`;
}

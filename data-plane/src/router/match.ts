/**
 * Request matching by host, path and method, compiled once per snapshot into immutable tables.
 *
 * Precedence is deterministic and independent of rule order:
 *   1. host: exact host, then "*.suffix" wildcard, then rules without hosts;
 *   2. path (within the first host level that has any path match): exact path, then the longest
 *      prefix ("/api/*" is prefix "/api/" and also matches "/api" itself);
 *   3. method: a rule listing the method, else a rule without methods; if the best path matched only
 *      rules for other methods, the answer is 405 with the allowed methods.
 * Two rules that would claim the same (host, path, method) are refused when the table is built.
 */

/** What the router needs to know about a rule. */
export interface RouteSpec {
  /** Identifies the rule in conflict errors (e.g. "rule_ab12 (tenant t1)"). */
  readonly name: string;
  /** Lower-case hosts; empty for any host. */
  readonly hosts: readonly string[];
  /** Exact path, or prefix with a trailing '*'. */
  readonly path: string;
  /** Upper-case methods; empty for any. */
  readonly methods: readonly string[];
}

/** Answer for a path that matched only rules of other methods. */
export class MethodNotAllowed {
  constructor(
    /** Value for the Allow header. */
    readonly allow: string,
  ) {}
}

/** Two rules claim the same host, path and method. */
export class RouteConflictError<T extends RouteSpec = RouteSpec> extends Error {
  constructor(
    readonly existing: T,
    readonly incoming: T,
    readonly where: string,
  ) {
    super(`${incoming.name} conflicts with ${existing.name}: both match ${where}`);
    this.name = "RouteConflictError";
  }
}

/** Rules that share one (host, path) key, split by method. */
class Slot<T extends RouteSpec> {
  readonly byMethod = new Map<string, T>();
  any: T | undefined;
  notAllowed = new MethodNotAllowed("");

  add(route: T, where: string): void {
    if (route.methods.length === 0) {
      if (this.any !== undefined) throw new RouteConflictError(this.any, route, `${where} (any method)`);
      const clash = this.byMethod.values().next();
      this.any = route;
      if (!clash.done) {
        // A catch-all beside method-specific rules is ambiguous for those methods.
        throw new RouteConflictError(clash.value, route, `${where} (${[...this.byMethod.keys()].join(", ")})`);
      }
      return;
    }
    if (this.any !== undefined) throw new RouteConflictError(this.any, route, `${where} (${route.methods.join(", ")})`);
    for (const m of route.methods) {
      const existing = this.byMethod.get(m);
      if (existing !== undefined) throw new RouteConflictError(existing, route, `${where} ${m}`);
    }
    for (const m of route.methods) this.byMethod.set(m, route);
    this.notAllowed = new MethodNotAllowed([...this.byMethod.keys()].sort().join(", "));
  }

  /** The route for the method, or the 405 answer. */
  pick(method: string): T | MethodNotAllowed {
    if (this.any !== undefined) return this.any;
    return this.byMethod.get(method) ?? this.notAllowed;
  }
}

class TrieNode<T extends RouteSpec> {
  children: Map<number, TrieNode<T>> | undefined;
  exact: Slot<T> | undefined;
  prefix: Slot<T> | undefined;

  child(code: number): TrieNode<T> {
    this.children ??= new Map();
    let next = this.children.get(code);
    if (next === undefined) {
      next = new TrieNode<T>();
      this.children.set(code, next);
    }
    return next;
  }
}

const SLASH = 47;

/** Path table of one host level: a character trie with exact and prefix slots. */
class PathTable<T extends RouteSpec> {
  private readonly root = new TrieNode<T>();
  // Reused across lookups: matching is synchronous, so one scratch stack per table is safe.
  private stack: TrieNode<T>[] = [];

  add(route: T, hostLabel: string): void {
    const isPrefix = route.path.endsWith("*");
    const key = isPrefix ? route.path.slice(0, -1) : route.path;
    let node = this.root;
    for (let i = 0; i < key.length; i++) node = node.child(key.charCodeAt(i));
    const where = `host ${hostLabel} path ${route.path}`;
    if (isPrefix) (node.prefix ??= new Slot<T>()).add(route, where);
    else (node.exact ??= new Slot<T>()).add(route, where);
    if (this.stack.length < key.length + 2) this.stack = new Array(key.length + 2);
  }

  /** Best route for the path (pathEnd excludes the query string), 405 answer, or undefined. */
  match(path: string, pathEnd: number, method: string): T | MethodNotAllowed | undefined {
    const stack = this.stack;
    let depth = 0;
    let node: TrieNode<T> | undefined = this.root;
    if (node.prefix !== undefined) stack[depth++] = node;
    let i = 0;
    for (; i < pathEnd; i++) {
      node = node.children?.get(path.charCodeAt(i));
      if (node === undefined) break;
      if (node.prefix !== undefined && depth < stack.length) stack[depth++] = node;
    }
    // Candidates from most to least specific; the first that allows the method wins, else the
    // most specific refusal answers 405.
    let firstRefusal: MethodNotAllowed | undefined;
    if (node !== undefined && i === pathEnd) {
      if (node.exact !== undefined) {
        const picked = node.exact.pick(method);
        if (!(picked instanceof MethodNotAllowed)) return picked;
        firstRefusal = picked;
      }
      // "/api/*" also serves "/api".
      const slashChild = node.children?.get(SLASH);
      if (slashChild?.prefix !== undefined) {
        const picked = slashChild.prefix.pick(method);
        if (!(picked instanceof MethodNotAllowed)) return picked;
        firstRefusal ??= picked;
      }
    }
    while (depth > 0) {
      const slot = stack[--depth].prefix!;
      const picked = slot.pick(method);
      if (!(picked instanceof MethodNotAllowed)) return picked;
      firstRefusal ??= picked;
    }
    return firstRefusal;
  }
}

/** Result of a lookup: the rule, a 405, or undefined for 404. */
export type MatchResult<T> = T | MethodNotAllowed | undefined;

/** Immutable routing table over a set of rules. */
export class Router<T extends RouteSpec> {
  private readonly exactHosts = new Map<string, PathTable<T>>();
  private readonly wildcardHosts = new Map<string, PathTable<T>>();
  private readonly anyHost = new PathTable<T>();
  private readonly hasWildcards: boolean;
  /** False when no rule names a host: the proxy then need not parse the Host header at all. */
  readonly usesHosts: boolean;

  /** Builds the table; throws RouteConflictError when two rules claim the same key. */
  constructor(routes: readonly T[]) {
    for (const route of routes) {
      if (route.hosts.length === 0) {
        this.anyHost.add(route, "*");
        continue;
      }
      for (const host of route.hosts) {
        const wildcard = host.startsWith("*.");
        const map = wildcard ? this.wildcardHosts : this.exactHosts;
        const key = wildcard ? host.slice(1) : host; // ".example.com"
        let table = map.get(key);
        if (table === undefined) {
          table = new PathTable<T>();
          map.set(key, table);
        }
        table.add(route, host);
      }
    }
    this.hasWildcards = this.wildcardHosts.size > 0;
    this.usesHosts = this.exactHosts.size > 0 || this.hasWildcards;
  }

  /**
   * Finds the rule for a request. `host` is lower-case without port; `url` is the request target
   * (path and query).
   */
  match(host: string, method: string, url: string): MatchResult<T> {
    let pathEnd = url.indexOf("?");
    if (pathEnd === -1) pathEnd = url.length;
    if (this.exactHosts.size > 0) {
      const table = this.exactHosts.get(host);
      if (table !== undefined) {
        const r = table.match(url, pathEnd, method);
        if (r !== undefined) return r;
      }
    }
    if (this.hasWildcards) {
      const dot = host.indexOf(".");
      if (dot > 0) {
        const table = this.wildcardHosts.get(host.slice(dot));
        if (table !== undefined) {
          const r = table.match(url, pathEnd, method);
          if (r !== undefined) return r;
        }
      }
    }
    return this.anyHost.match(url, pathEnd, method);
  }
}

/**
 * Length of the request path that strip_path removes: the part before '*' without its trailing
 * slash ("/api/*" forwards "/api/v1/x" as "/v1/x"); an exact rule forwards "/".
 */
export function stripLength(rulePath: string): number {
  if (!rulePath.endsWith("*")) return rulePath.length;
  const prefix = rulePath.slice(0, -1);
  return prefix.endsWith("/") ? prefix.length - 1 : prefix.length;
}

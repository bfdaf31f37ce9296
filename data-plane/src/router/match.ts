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

/** Children whose first-character codes span at most this many values sit in a dense array. */
const DENSE_SPAN = 128;
const SLASH = 47;

/** A node of the radix tree: every rule key ends at a node, so prefix candidates are only here. */
class RadixNode<T extends RouteSpec> {
  exact: Slot<T> | undefined = undefined;
  prefix: Slot<T> | undefined = undefined;
  /** Prefix slot of this key + "/", which also serves this key ("/api/*" serves "/api"). */
  slashPrefix: Slot<T> | undefined = undefined;
  /** First character code of table[0]; children found by `code - lo`, one array load per branch. */
  lo = 0;
  table: (RadixNode<T> | undefined)[] = noChildren();
  /** Children when their first characters are too far apart for a dense array (non-ASCII paths). */
  wide: Map<number, RadixNode<T>> | undefined = undefined;
  /** label.length, kept beside the node: a one-character edge (common) never loads its label. */
  readonly labelLength: number;

  constructor(
    /** Edge label from the parent: the key's characters after the parent's key (root: ""). */
    readonly label: string,
  ) {
    this.labelLength = label.length;
  }

  child(code: number): RadixNode<T> | undefined {
    const k = code - this.lo;
    if (k >= 0 && k < this.table.length) return this.table[k];
    return this.wide === undefined ? undefined : this.wide.get(code);
  }
}

/**
 * An empty children array of the same elements kind as the filled ones (objects), so the load in
 * `child` sees one array shape on every node.
 */
function noChildren<T extends RouteSpec>(): (RadixNode<T> | undefined)[] {
  const a: (RadixNode<T> | undefined)[] = [undefined];
  a.length = 0;
  return a;
}

/** Rules that end at one key while the table is being built. */
interface KeySlots<T extends RouteSpec> {
  exact: Slot<T> | undefined;
  prefix: Slot<T> | undefined;
}

/**
 * Path table of one host level: a radix tree whose edges carry string labels, so a lookup
 * touches only branch points (a few per request) instead of one node per character. Rules are
 * collected by key while the Router is built, then compile() builds the tree once.
 */
class PathTable<T extends RouteSpec> {
  private readonly keys = new Map<string, KeySlots<T>>();
  private root = new RadixNode<T>("");
  // Prefix slots along the path, reused across lookups: matching is synchronous, so one scratch
  // stack per table is safe. Holds at most one slot per prefix key.
  private stack: Slot<T>[] = [];

  add(route: T, hostLabel: string): void {
    const isPrefix = route.path.endsWith("*");
    const key = isPrefix ? route.path.slice(0, -1) : route.path;
    let slots = this.keys.get(key);
    if (slots === undefined) {
      slots = { exact: undefined, prefix: undefined };
      this.keys.set(key, slots);
    }
    const where = `host ${hostLabel} path ${route.path}`;
    if (isPrefix) (slots.prefix ??= new Slot<T>()).add(route, where);
    else (slots.exact ??= new Slot<T>()).add(route, where);
  }

  /** Builds the tree from the collected keys; called once after the last add(). */
  compile(): void {
    const keys = [...this.keys.keys()].sort(); // by UTF-16 code units, as charCodeAt compares
    let prefixes = 0;
    for (const slots of this.keys.values()) if (slots.prefix !== undefined) prefixes++;
    this.stack = new Array<Slot<T>>(prefixes);
    this.root = keys.length === 0 ? new RadixNode<T>("") : this.build(keys, 0, keys.length, 0, "");
  }

  /** Node for keys[lo..hi), which share their first `depth` characters (the node's key). */
  private build(keys: string[], lo: number, hi: number, depth: number, label: string): RadixNode<T> {
    const node = new RadixNode<T>(label);
    let g = lo;
    if (keys[g].length === depth) {
      // Sorted: a key that is this node's key itself comes first.
      const slots = this.keys.get(keys[g])!;
      node.exact = slots.exact;
      node.prefix = slots.prefix;
      g++;
    }
    const children: RadixNode<T>[] = [];
    while (g < hi) {
      const code = keys[g].charCodeAt(depth);
      let h = g + 1;
      while (h < hi && keys[h].charCodeAt(depth) === code) h++;
      // In sorted order the group's common prefix is that of its first and last key.
      const first = keys[g];
      const last = keys[h - 1];
      const max = Math.min(first.length, last.length);
      let d = depth + 1;
      while (d < max && first.charCodeAt(d) === last.charCodeAt(d)) d++;
      children.push(this.build(keys, g, h, d, first.slice(depth, d)));
      g = h;
    }
    if (children.length === 0) return node;
    const lowest = children[0].label.charCodeAt(0);
    const span = children[children.length - 1].label.charCodeAt(0) - lowest + 1;
    if (span <= DENSE_SPAN) {
      const table: (RadixNode<T> | undefined)[] = noChildren();
      for (let k = 0; k < span; k++) table.push(undefined);
      for (const c of children) table[c.label.charCodeAt(0) - lowest] = c;
      node.lo = lowest;
      node.table = table;
    } else {
      node.wide = new Map(children.map((c) => [c.label.charCodeAt(0), c]));
    }
    const slashChild = node.child(SLASH);
    if (slashChild !== undefined && slashChild.label === "/") node.slashPrefix = slashChild.prefix;
    return node;
  }

  /** Best route for the path (pathEnd excludes the query string), 405 answer, or undefined. */
  match(path: string, pathEnd: number, method: string): T | MethodNotAllowed | undefined {
    const stack = this.stack;
    let depth = 0;
    let node = this.root;
    let i = 0; // node's key is path[0, i)
    // When the path ends: the prefix slot of path + "/" if that key exists, and whether the path
    // itself is a key's node (else it ended inside an edge or left the tree).
    let slash: Slot<T> | undefined;
    let atNode = false;
    for (;;) {
      if (node.prefix !== undefined) stack[depth++] = node.prefix;
      if (i === pathEnd) {
        atNode = true;
        slash = node.slashPrefix;
        break;
      }
      const next = node.child(path.charCodeAt(i));
      if (next === undefined) break;
      const length = next.labelLength;
      const end = i + length;
      if (end > pathEnd) {
        // The path ends inside this edge; if only a final "/" is left, next's key is path + "/".
        const label = next.label;
        if (end === pathEnd + 1 && label.charCodeAt(length - 1) === SLASH && sameChars(path, i, label, length - 1)) {
          slash = next.prefix;
        }
        break;
      }
      // The first character chose the edge; longer labels compare the rest.
      if (length > 1 && !sameChars(path, i, next.label, length)) break;
      node = next;
      i = end;
    }
    // Candidates from most to least specific; the first that allows the method wins, else the
    // most specific refusal answers 405.
    let firstRefusal: MethodNotAllowed | undefined;
    if (atNode && node.exact !== undefined) {
      const picked = node.exact.pick(method);
      if (!(picked instanceof MethodNotAllowed)) return picked;
      firstRefusal = picked;
    }
    if (slash !== undefined) {
      const picked = slash.pick(method);
      if (!(picked instanceof MethodNotAllowed)) return picked;
      firstRefusal ??= picked;
    }
    while (depth > 0) {
      const slot = stack[--depth];
      if (slot.any !== undefined) return slot.any; // the common rule without methods
      const picked = slot.pick(method);
      if (!(picked instanceof MethodNotAllowed)) return picked;
      firstRefusal ??= picked;
    }
    return firstRefusal;
  }
}

/** Whether path[at + 1, at + n) equals label[1, n) (the first character chose the edge). */
function sameChars(path: string, at: number, label: string, n: number): boolean {
  for (let j = 1; j < n; j++) if (path.charCodeAt(at + j) !== label.charCodeAt(j)) return false;
  return true;
}

/**
 * Hash of host[from, end), the same for a wildcard's suffix and a request host's, so finding the
 * wildcard table needs no `host.slice` per request. Kept within small-integer range.
 */
function suffixHash(host: string, from: number): number {
  let h = 0x811c9dc5;
  for (let i = from; i < host.length; i++) h = Math.imul(h ^ host.charCodeAt(i), 0x01000193);
  return h & 0x3fffffff;
}

/** Path table of the wildcard "*" + suffix (suffix ".example.com"). */
interface WildcardTable<T extends RouteSpec> {
  readonly suffix: string;
  readonly table: PathTable<T>;
}

/** Result of a lookup: the rule, a 405, or undefined for 404. */
export type MatchResult<T> = T | MethodNotAllowed | undefined;

/** Immutable routing table over a set of rules. */
export class Router<T extends RouteSpec> {
  private readonly exactHosts = new Map<string, PathTable<T>>();
  /** Wildcard tables by suffixHash of their suffix (with the leading dot); collisions share a list. */
  private readonly wildcardHosts = new Map<number, WildcardTable<T>[]>();
  private readonly anyHost = new PathTable<T>();
  private readonly hasWildcards: boolean;
  /** False when no rule names a host: the proxy then need not parse the Host header at all. */
  readonly usesHosts: boolean;

  /** Builds the table; throws RouteConflictError when two rules claim the same key. */
  constructor(routes: readonly T[]) {
    const wildcards = new Map<string, PathTable<T>>();
    for (const route of routes) {
      if (route.hosts.length === 0) {
        this.anyHost.add(route, "*");
        continue;
      }
      for (const host of route.hosts) {
        const wildcard = host.startsWith("*.");
        const map = wildcard ? wildcards : this.exactHosts;
        const key = wildcard ? host.slice(1) : host; // ".example.com"
        let table = map.get(key);
        if (table === undefined) {
          table = new PathTable<T>();
          map.set(key, table);
        }
        table.add(route, host);
      }
    }
    this.anyHost.compile();
    for (const table of this.exactHosts.values()) table.compile();
    for (const [suffix, table] of wildcards) {
      table.compile();
      const hash = suffixHash(suffix, 0);
      const list = this.wildcardHosts.get(hash);
      if (list === undefined) this.wildcardHosts.set(hash, [{ suffix, table }]);
      else list.push({ suffix, table });
    }
    this.hasWildcards = wildcards.size > 0;
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
      const table = this.wildcardTable(host);
      if (table !== undefined) {
        const r = table.match(url, pathEnd, method);
        if (r !== undefined) return r;
      }
    }
    return this.anyHost.match(url, pathEnd, method);
  }

  /** Table of the wildcard covering the host's first label ("*.example.com" for "eu.example.com"). */
  private wildcardTable(host: string): PathTable<T> | undefined {
    const dot = host.indexOf(".");
    if (dot <= 0) return undefined;
    const list = this.wildcardHosts.get(suffixHash(host, dot));
    if (list === undefined) return undefined;
    const length = host.length - dot;
    for (let k = 0; k < list.length; k++) {
      const w = list[k];
      if (w.suffix.length === length && host.startsWith(w.suffix, dot)) return w.table;
    }
    return undefined;
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

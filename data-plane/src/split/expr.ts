/**
 * Compiles a split rule's `match` (APISIX traffic-split / lua-resty-expr expressions) into a
 * predicate over a RequestView.
 *
 * Everything is decided when the snapshot is compiled: variables become getters, values are
 * converted and regexes compiled, and anything invalid is refused with a ConfigError naming the
 * exact expression (`…match[1].vars[0]`), so the control plane refuses at write time exactly what a
 * data plane would NACK. `test()` only calls the precompiled closures.
 *
 * Semantics (lua-resty-expr's, with the choices below written down):
 * - The expressions of one `vars` are AND-ed; the `match` entries are OR-ed; an empty `match` (or an
 *   empty `vars`) matches everything.
 * - Forms: `[var, op, value]` and `[var, "!", op, value]` (negation). The 2-element shorthand and
 *   nested "AND"/"OR" lists of lua-resty-expr are refused: traffic-split configs do not use them,
 *   and a shorthand typo would otherwise silently mean `==`.
 * - A missing variable (absent header, query parameter, cookie or claim; no country) never
 *   satisfies a positive operator, so its negation (`!`) is true. `~=` is the negation of `==`
 *   (as in lua-resty-expr, where `nil ~= "x"`), so it is true for a missing variable.
 * - `==`/`~=`: string equality; when the configured value is a JSON number the comparison is
 *   numeric ("30" == 30; "abc" ~= 30). A boolean value compares with the text "true"/"false".
 *   Claims that are numbers or booleans compare through their text form against string values.
 * - `>`, `<`, `>=`, `<=`: both sides must be finite numbers (the value may be a number-like string,
 *   checked at compile time); a variable that does not parse never matches.
 * - `~~` / `~*`: RE2 regex (linear time, so no pattern can stall the proxy), unanchored search as
 *   in lua-resty-expr's `re.find`; `~*` is case-insensitive.
 * - `in`: the value is an array; the variable equals one element (equality as `==`).
 * - `has`: the variable is an array (a JWT claim such as roles) containing the value. A string
 *   variable counts as a list split on commas and whitespace, which covers both header lists
 *   ("a, b") and OAuth2 `scope` claims ("read write"). Anything else never matches.
 * - `ipmatch`: the value is an IP or CIDR (IPv4/IPv6) or an array of them; the variable must be an
 *   address inside one. IPv4-mapped IPv6 addresses match IPv4 blocks.
 * - Variables: `http_<name>` reads the header lower-cased. nginx (hence APISIX) exposes
 *   `http_x_api_id` for header "X-Api-Id"; to keep such configs working, a name with underscores
 *   falls back to the dashed header when the underscored one is absent. `arg_<name>` (query),
 *   `cookie_<name>`, `jwt_<dotted.claim.path>` (verified tokens only), `remote_addr`, `geo_country`,
 *   `uri` (the path, without the query string, as nginx's $uri), `request_uri` (path and query as
 *   received), `method`, `host`.
 */
import { toJson } from "@bufbuild/protobuf";
import { ListValueSchema, type ListValue } from "@bufbuild/protobuf/wkt";
import { RE2JS } from "re2js";
import { ConfigError } from "../config/errors.js";
import { CidrSet } from "./ip.js";
import type { RequestView } from "./request-view.js";

/** A compiled `match`: the predicate plus what the proxy must resolve before calling it. */
export interface CompiledMatch {
  /** Whether the request matches. Synchronous and allocation-free apart from the view's own parsing. */
  test(req: RequestView): boolean;
  /**
   * Whether any expression reads a `jwt_` variable: only then must the proxy verify the token
   * (asynchronously) and call setJwtClaims before test().
   */
  readonly needsJwt: boolean;
}

/**
 * One `match` entry. `vars` items may be plain JSON arrays (REST, YAML, tests) or protobuf
 * `ListValue`s straight from a `MatchClause`, so callers need not convert a snapshot first.
 */
export interface MatchClauseInput {
  readonly vars: readonly (ListValue | readonly unknown[])[];
}

type Getter = (req: RequestView) => unknown;
type ValueTest = (value: unknown) => boolean;
type Predicate = (req: RequestView) => boolean;

const ALWAYS: CompiledMatch = { test: () => true, needsJwt: false };

/**
 * Compiles the `match` list of a split rule. `field` is the path of that list as the API spells it
 * (e.g. `rules[2].traffic_split.rules[0].match`); errors name `${field}[i].vars[j]`.
 */
export function compileMatch(match: readonly MatchClauseInput[] | undefined, field: string): CompiledMatch {
  if (match === undefined || match.length === 0) return ALWAYS;
  const plain = match.map((clause, i) => {
    const vars = (clause as { vars?: unknown } | null)?.vars;
    if (!Array.isArray(vars)) throw new ConfigError(`${field}[${i}].vars`, "must be a list of expressions");
    return vars.map(toPlain);
  });
  // Identical matches (the same canary condition on many rules) share one compiled match, as
  // identical expressions do (see INTERNED): fewer distinct objects for the request path to load.
  const key = jsonKey(plain);
  const hit = key === undefined ? undefined : INTERNED_MATCHES.get(key);
  if (hit !== undefined) return hit;
  const compiled = compilePlainMatch(plain, field);
  if (key !== undefined) {
    if (INTERNED_MATCHES.size >= MAX_INTERNED) INTERNED_MATCHES.clear();
    INTERNED_MATCHES.set(key, compiled);
  }
  return compiled;
}

/** JSON text as a cache key; undefined for what JSON cannot express (cyclic input, refused later). */
function jsonKey(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch {
    return undefined;
  }
}

function compilePlainMatch(match: readonly unknown[][], field: string): CompiledMatch {
  let needsJwt = false;
  const clauses: Predicate[][] = match.map((vars, i) =>
    vars.map((expr, j) => {
      const compiled = compileExpression(expr, `${field}[${i}].vars[${j}]`);
      needsJwt ||= compiled.needsJwt;
      return compiled.predicate;
    }),
  );
  // An empty vars is an AND of nothing: true, and so is the OR around it (no token to verify).
  if (clauses.some((c) => c.length === 0)) return ALWAYS;
  // The common shapes get a test with fewer objects between the split rule and the expression:
  // with many rules the cost per request is mostly memory loads, one per object on the way.
  if (clauses.length === 1) {
    const only = clauses[0];
    if (only.length === 1) return { needsJwt, test: only[0] };
    if (only.length === 2) {
      const [a, b] = only;
      return { needsJwt, test: (req) => a(req) && b(req) };
    }
    return { needsJwt, test: (req) => allOf(only, req) };
  }
  return {
    needsJwt,
    test(req: RequestView): boolean {
      // Plain loops: this runs on every request, and closures over arrays inline well.
      outer: for (let i = 0; i < clauses.length; i++) {
        const clause = clauses[i];
        for (let j = 0; j < clause.length; j++) {
          if (!clause[j](req)) continue outer;
        }
        return true;
      }
      return false;
    },
  };
}

function allOf(predicates: readonly Predicate[], req: RequestView): boolean {
  for (let j = 0; j < predicates.length; j++) if (!predicates[j](req)) return false;
  return true;
}

function toPlain(raw: unknown): unknown {
  if (Array.isArray(raw)) return raw;
  if (typeof raw === "object" && raw !== null && (raw as { $typeName?: unknown }).$typeName === ListValueSchema.typeName) {
    return toJson(ListValueSchema, raw as ListValue);
  }
  return raw;
}

interface CompiledExpression {
  readonly predicate: Predicate;
  readonly needsJwt: boolean;
}

const OPERATORS = new Set(["==", "~=", ">", "<", ">=", "<=", "~~", "~*", "in", "has", "ipmatch"]);

/**
 * Compiled expressions by their JSON text. A predicate depends on nothing but its expression, so
 * rules repeating one (the same canary header on many routes) share one closure and one compiled
 * regex: compiling is cheaper and the request path touches less memory. Bounded; cleared when full.
 */
const INTERNED = new Map<string, CompiledExpression>();
const INTERNED_MATCHES = new Map<string, CompiledMatch>();
const MAX_INTERNED = 8192;

function compileExpression(expr: unknown, field: string): CompiledExpression {
  const key = jsonKey(expr);
  const hit = key === undefined ? undefined : INTERNED.get(key);
  if (hit !== undefined) return hit;
  const compiled = compileExpressionUncached(expr, field);
  if (key !== undefined) {
    if (INTERNED.size >= MAX_INTERNED) INTERNED.clear();
    INTERNED.set(key, compiled);
  }
  return compiled;
}

function compileExpressionUncached(expr: unknown, field: string): CompiledExpression {
  if (!Array.isArray(expr)) throw new ConfigError(field, "expression must be an array [var, op, value] or [var, \"!\", op, value]");
  if (typeof expr[0] === "string" && /^!?(and|or)$/i.test(expr[0])) {
    throw new ConfigError(field, `nested logical operators (${expr[0]}) are not supported: list expressions in vars (AND) or in separate match entries (OR)`);
  }
  if (expr.length !== 3 && expr.length !== 4) {
    throw new ConfigError(field, `wrong arity: expected [var, op, value] or [var, "!", op, value], got ${expr.length} elements`);
  }
  const negate = expr.length === 4;
  if (negate && expr[1] !== "!") throw new ConfigError(field, `a 4-element expression must have "!" second, got ${JSON.stringify(expr[1])}`);
  const [name, rawOp, value] = negate ? [expr[0], expr[2], expr[3]] : expr;
  if (typeof name !== "string") throw new ConfigError(field, "variable name must be a string");
  if (typeof rawOp !== "string") throw new ConfigError(field, "operator must be a string");
  const op = rawOp.toLowerCase();
  if (!OPERATORS.has(op)) throw new ConfigError(field, `unknown operator ${JSON.stringify(rawOp)}`);
  if (value === null || value === undefined) throw new ConfigError(field, "value of wrong type: value is missing (null)");

  const variable = compileVariable(name, field);
  // `~=` is the negation of `==` so that the two agree on every input, missing variables included.
  const valueTest = compileOperator(op === "~=" ? "==" : op, value, field);
  const inverted = negate !== (op === "~=");
  const equals = (op === "==" || op === "~=") && typeof value === "string" ? value : undefined;
  const predicate = specialised(variable, equals, valueTest, inverted) ?? generic(variable.get, valueTest, inverted);
  return { predicate, needsJwt: name.startsWith("jwt_") };
}

function generic(getter: Getter, valueTest: ValueTest, inverted: boolean): Predicate {
  return inverted ? (req) => !valueTest(getter(req)) : (req) => valueTest(getter(req));
}

/**
 * Predicates for the most common expressions (a header, query parameter or cookie, compared with
 * `==` to a string or tested by an operator) that call the view directly instead of going through a
 * getter closure; `==` on a string compares inline (the view's values are strings or undefined, and
 * undefined never equals a string, as equalsTest has it). Same results as generic(); fewer hops.
 */
function specialised(v: Variable, equals: string | undefined, valueTest: ValueTest, inverted: boolean): Predicate | undefined {
  const name = v.name;
  switch (v.kind) {
    case "header":
      if (equals !== undefined) return inverted ? (req) => req.header(name) !== equals : (req) => req.header(name) === equals;
      return inverted ? (req) => !valueTest(req.header(name)) : (req) => valueTest(req.header(name));
    case "query":
      if (equals !== undefined) return inverted ? (req) => req.query(name) !== equals : (req) => req.query(name) === equals;
      return inverted ? (req) => !valueTest(req.query(name)) : (req) => valueTest(req.query(name));
    case "cookie":
      if (equals !== undefined) return inverted ? (req) => req.cookie(name) !== equals : (req) => req.cookie(name) === equals;
      return inverted ? (req) => !valueTest(req.cookie(name)) : (req) => valueTest(req.cookie(name));
    default:
      return undefined;
  }
}

/** A compiled variable: its getter, and for the plain kinds the name the view is asked for. */
interface Variable {
  readonly kind: "header" | "query" | "cookie" | "other";
  readonly name: string;
  readonly get: Getter;
}

function compileVariable(name: string, field: string): Variable {
  const getter = compileGetter(name, field);
  if (name.startsWith("http_")) {
    const header = name.slice(5).toLowerCase();
    // Names with underscores also try the dashed header (see the module doc): the generic path.
    return header.includes("_") ? { kind: "other", name: header, get: getter } : { kind: "header", name: header, get: getter };
  }
  if (name.startsWith("arg_")) return { kind: "query", name: name.slice(4), get: getter };
  if (name.startsWith("cookie_")) return { kind: "cookie", name: name.slice(7), get: getter };
  return { kind: "other", name, get: getter };
}

function compileGetter(name: string, field: string): Getter {
  switch (name) {
    case "remote_addr":
      return (req) => req.remoteAddr();
    case "geo_country":
      return (req) => req.geoCountry();
    case "uri":
      return pathOf;
    case "request_uri":
      return (req) => req.uri;
    case "method":
      return (req) => req.method;
    case "host":
      return (req) => req.host;
  }
  const unknown = (): never => {
    throw new ConfigError(field, `unknown variable ${JSON.stringify(name)}: use http_<header>, arg_<query>, cookie_<name>, jwt_<claim>, remote_addr, geo_country, uri, request_uri, method or host`);
  };
  const rest = (prefix: string): string => {
    const suffix = name.slice(prefix.length);
    if (suffix.length === 0) unknown();
    return suffix;
  };
  if (name.startsWith("http_")) {
    const header = rest("http_").toLowerCase();
    if (!header.includes("_")) return (req) => req.header(header);
    const dashed = header.replaceAll("_", "-");
    return (req) => req.header(header) ?? req.header(dashed);
  }
  if (name.startsWith("arg_")) {
    const arg = rest("arg_");
    return (req) => req.query(arg);
  }
  if (name.startsWith("cookie_")) {
    const cookie = rest("cookie_");
    return (req) => req.cookie(cookie);
  }
  if (name.startsWith("jwt_")) {
    const path = rest("jwt_");
    if (path.split(".").some((segment) => segment.length === 0)) {
      throw new ConfigError(field, `invalid claim path ${JSON.stringify(path)}: empty segment`);
    }
    return (req) => req.jwtClaim(path);
  }
  return unknown();
}

/** nginx's $uri: the path without the query string. Slices only when there is a query. */
function pathOf(req: RequestView): string {
  const uri = req.uri;
  const q = uri.indexOf("?");
  return q < 0 ? uri : uri.slice(0, q);
}

function compileOperator(op: string, value: unknown, field: string): ValueTest {
  switch (op) {
    case "==":
      return equalsTest(scalarValue(value, field, op));
    case ">":
    case "<":
    case ">=":
    case "<=":
      return numericTest(op, numericValue(value, field, op));
    case "~~":
    case "~*":
      return regexTest(value, op === "~*", field);
    case "in":
      return inTest(value, field);
    case "has":
      return hasTest(scalarValue(value, field, op));
    case "ipmatch":
      return ipmatchTest(value, field);
  }
  throw new ConfigError(field, `unknown operator ${JSON.stringify(op)}`);
}

type Scalar = string | number | boolean;

function scalarValue(value: unknown, field: string, op: string): Scalar {
  if (typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number" && Number.isFinite(value)) return value;
  throw new ConfigError(field, `value of wrong type: ${op} needs a string, number or boolean, got ${describe(value)}`);
}

function numericValue(value: unknown, field: string, op: string): number {
  const n = typeof value === "number" || typeof value === "string" ? toNumber(value) : Number.NaN;
  if (Number.isNaN(n)) throw new ConfigError(field, `value of wrong type: ${op} needs a number or a number-like string, got ${describe(value)}`);
  return n;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return `${typeof value} ${JSON.stringify(value)}`;
}

/**
 * A finite number from a variable's value, else NaN. Strings must be entirely numeric (blanks
 * around allowed): Number("") is 0 and must not make an empty header "equal" to 0.
 */
function toNumber(v: unknown): number {
  if (typeof v === "number") return Number.isFinite(v) ? v : Number.NaN;
  if (typeof v !== "string") return Number.NaN;
  const n = Number(v);
  if (!Number.isFinite(n)) return Number.NaN;
  if (n === 0 && v.trim().length === 0) return Number.NaN;
  return n;
}

/** The text form of a scalar variable value; undefined for missing values, arrays and objects. */
function textOf(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : undefined;
  if (typeof v === "boolean") return v ? "true" : "false";
  return undefined;
}

function equalsTest(expected: Scalar): ValueTest {
  if (typeof expected === "number") return (v) => toNumber(v) === expected;
  const text = typeof expected === "boolean" ? (expected ? "true" : "false") : expected;
  return (v) => (typeof v === "string" ? v === text : textOf(v) === text);
}

function numericTest(op: string, bound: number): ValueTest {
  // NaN compares false with everything, so a non-numeric variable never matches.
  switch (op) {
    case ">":
      return (v) => toNumber(v) > bound;
    case "<":
      return (v) => toNumber(v) < bound;
    case ">=":
      return (v) => toNumber(v) >= bound;
    default:
      return (v) => toNumber(v) <= bound;
  }
}

function regexTest(value: unknown, caseInsensitive: boolean, field: string): ValueTest {
  if (typeof value !== "string") throw new ConfigError(field, `value of wrong type: a regex must be a string, got ${describe(value)}`);
  const regex = compileRegex(value, caseInsensitive, field);
  return (v) => {
    const text = typeof v === "string" ? v : textOf(v);
    return text !== undefined && regex.test(text);
  };
}

/** A compiled RE2 regex with a pre-check on the literal every match contains (see requiredLiteral). */
class CompiledRegex {
  private readonly literal: string;
  private readonly anchored: boolean;

  constructor(
    private readonly re: RE2JS,
    required: { literal: string; anchored: boolean } | undefined,
  ) {
    this.literal = required?.literal ?? "";
    this.anchored = required?.anchored ?? false;
  }

  /**
   * Unanchored search, as lua-resty-expr's re.find. A text without the pattern's literal cannot
   * match: most texts are refused without running the regex (a User-Agent against "^Beta/" costs a
   * startsWith, not an RE2 search).
   */
  test(text: string): boolean {
    const literal = this.literal;
    if (literal.length > 0 && !(this.anchored ? text.startsWith(literal) : text.includes(literal))) return false;
    return this.re.test(text);
  }
}

const REGEXES = new Map<string, CompiledRegex>();

/** Compiles (or reuses: RE2 compilation is the costly part of compiling a snapshot) a regex. */
function compileRegex(pattern: string, caseInsensitive: boolean, field: string): CompiledRegex {
  const key = (caseInsensitive ? "i:" : "s:") + pattern;
  const hit = REGEXES.get(key);
  if (hit !== undefined) return hit;
  let re: RE2JS;
  try {
    re = RE2JS.compile(pattern, caseInsensitive ? RE2JS.CASE_INSENSITIVE : 0);
  } catch (err) {
    throw new ConfigError(field, `invalid regex: ${(err as Error).message}`);
  }
  const compiled = new CompiledRegex(re, caseInsensitive ? undefined : requiredLiteral(pattern));
  if (REGEXES.size >= MAX_INTERNED) REGEXES.clear();
  REGEXES.set(key, compiled);
  return compiled;
}

/** Characters that end a literal run in an RE2 pattern (anything that is not a plain character). */
const REGEX_META = new Set([".", "[", "]", "(", ")", "^", "$", "|", "*", "+", "?", "{", "}", "\\"]);

/**
 * A literal every match must contain: the run of plain characters the pattern starts with (after a
 * leading "^", in which case the text must start with it). Undefined when there is none or the
 * pattern has an alternation anywhere (a branch need not contain it). A quantifier after the run
 * makes its last character optional, so that character is left out. Only ever a necessary
 * condition: it may let through texts the regex refuses, never refuse one it would match.
 */
export function requiredLiteral(pattern: string): { literal: string; anchored: boolean } | undefined {
  if (pattern.includes("|")) return undefined;
  const anchored = pattern.charCodeAt(0) === 94; /* ^ */
  const start = anchored ? 1 : 0;
  let end = start;
  while (end < pattern.length && !REGEX_META.has(pattern[end])) end++;
  const next = pattern[end];
  if (next === "?" || next === "*" || next === "+" || next === "{") {
    end--;
    // The quantified character may be a surrogate pair: drop both halves.
    const low = pattern.charCodeAt(end);
    if (low >= 0xdc00 && low <= 0xdfff && end > start && pattern.charCodeAt(end - 1) >= 0xd800 && pattern.charCodeAt(end - 1) <= 0xdbff) end--;
  }
  return end > start ? { literal: pattern.slice(start, end), anchored } : undefined;
}

function inTest(value: unknown, field: string): ValueTest {
  if (!Array.isArray(value)) throw new ConfigError(field, `value of wrong type: in needs an array, got ${describe(value)}`);
  const texts = new Set<string>();
  const numbers = new Set<number>();
  value.forEach((item: unknown, k) => {
    if (typeof item === "string") texts.add(item);
    else if (typeof item === "boolean") texts.add(item ? "true" : "false");
    else if (typeof item === "number" && Number.isFinite(item)) numbers.add(item);
    else throw new ConfigError(field, `value of wrong type: in: element ${k} must be a string, number or boolean, got ${describe(item)}`);
  });
  const anyNumbers = numbers.size > 0;
  return (v) => {
    const text = typeof v === "string" ? v : textOf(v);
    if (text === undefined) return false;
    if (texts.has(text)) return true;
    return anyNumbers && numbers.has(toNumber(v));
  };
}

function hasTest(expected: Scalar): ValueTest {
  const element = equalsTest(expected);
  const token = typeof expected === "number" ? undefined : typeof expected === "boolean" ? String(expected) : expected;
  return (v) => {
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) if (element(v[i])) return true;
      return false;
    }
    if (typeof v !== "string") return false;
    return token !== undefined ? hasToken(v, token) : hasNumericToken(v, expected as number);
  };
}

function isListDelimiter(c: number): boolean {
  return c === 44 /* , */ || c === 32 || c === 9;
}

/** Whether `token` is one of the comma/blank separated items of `list`, without splitting it. */
function hasToken(list: string, token: string): boolean {
  if (token.length === 0) return false;
  let from = 0;
  for (;;) {
    const at = list.indexOf(token, from);
    if (at < 0) return false;
    const end = at + token.length;
    if ((at === 0 || isListDelimiter(list.charCodeAt(at - 1))) && (end === list.length || isListDelimiter(list.charCodeAt(end)))) {
      return true;
    }
    from = at + 1;
  }
}

/** As hasToken for a numeric value: items are compared as numbers ("1.0, 2" has 1). */
function hasNumericToken(list: string, expected: number): boolean {
  let start = 0;
  const n = list.length;
  while (start < n) {
    while (start < n && isListDelimiter(list.charCodeAt(start))) start++;
    let end = start;
    while (end < n && !isListDelimiter(list.charCodeAt(end))) end++;
    if (end > start && toNumber(list.slice(start, end)) === expected) return true;
    start = end;
  }
  return false;
}

function ipmatchTest(value: unknown, field: string): ValueTest {
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || list.some((item) => typeof item !== "string")) {
    throw new ConfigError(field, `value of wrong type: ipmatch needs an IP/CIDR string or a non-empty array of them, got ${describe(value)}`);
  }
  let set: CidrSet;
  try {
    set = CidrSet.parse(list as string[], "value");
  } catch (err) {
    throw new ConfigError(field, `value of wrong type: ipmatch: ${(err as Error).message}`);
  }
  return (v) => typeof v === "string" && set.has(v);
}

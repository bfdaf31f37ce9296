/**
 * The request path's shortcuts give the same answers as the straightforward code they replace:
 * query lookups by scanning vs URLSearchParams, cookie lookups by scanning vs a full parse, header
 * lookups from rawHeaders vs what node exposes, a regex's literal pre-check vs the regex, and shared
 * (interned) compiled expressions vs compiling each one anew.
 */
import { createServer, request, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { RE2JS } from "re2js";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import { compileMatch, requiredLiteral } from "../../../../data-plane/src/split/expr.js";
import { IncomingRequestView } from "../../../../data-plane/src/split/incoming-request-view.js";
import { fakeView } from "./fake-view.js";

const view = (url: string, raw: string[] = []) => new IncomingRequestView({ method: "GET", url, rawHeaders: raw, socket: { remoteAddress: "198.51.100.7" } });

describe("query(): scanning answers as URLSearchParams does", () => {
  const queries = [
    "a=1&b=2",
    "a=1&a=2",
    "a&b=",
    "a=&a=1",
    "=x&a=1",
    "&&a=1&&",
    "a=1=2",
    "a=x+y",
    "a=x%20y",
    "a%3Db=1&a=2", // an encoded key before the wanted one
    "%61=encoded-a&a=plain", // "%61" decodes to "a" and comes first
    "a+b=1&a=2",
    "?a=1", // URLSearchParams skips one leading "?"
    "a=%zz&b=1",
    "a=caf%C3%A9",
    "a=%E9", // invalid UTF-8: replacement character
    "b=1&use_canary=true",
    "use_canary=true#frag",
    "a=1;b=2",
  ];
  const names = ["a", "b", "a b", "a=b", "use_canary", "x", ""];

  it.each(queries)("?%s", (qs) => {
    const reference = new URLSearchParams(qs);
    for (const name of names) {
      // A fresh view per name, so each answer comes from the scan (or its own fallback), not from a parse left by an earlier call.
      expect(view(`/p?${qs}`).query(name), `${name} in ${qs}`).toBe(reference.get(name) ?? undefined);
    }
    // And one view asked for every name in turn (the fallback parse, once made, answers the rest).
    const shared = view(`/p?${qs}`);
    for (const name of names) expect(shared.query(name), `${name} in ${qs} (shared view)`).toBe(reference.get(name) ?? undefined);
  });

  it("no query string, or an empty one", () => {
    expect(view("/p").query("a")).toBeUndefined();
    expect(view("/p?").query("a")).toBeUndefined();
  });
});

/** The cookie parse the scan replaced: split on ";", first "=", trim, first occurrence, quotes removed. */
function referenceCookies(header: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    if (name.length > 0 && !out.has(name)) out.set(name, value);
  }
  return out;
}

describe("cookie(): scanning answers as a full parse does", () => {
  const headers = [
    "a=1; b=2",
    "a=1;b=2;a=3",
    " a = 1 ; b=  2  ",
    'a="quoted"; b=""; c="',
    "a=x=y; =nameless; b",
    "a=1;;; ;b=2",
    "\u00a0a\u00a0=1; b=\t2\t",
    "session=s1; theme=dark; _ga=GA1.2.1",
    "a",
    "",
  ];
  const names = ["a", "b", "c", "session", "theme", "_ga", "x", "a=x", ""];

  it.each(headers)("Cookie: %j", (header) => {
    const reference = referenceCookies(header);
    const v = view("/", ["Cookie", header]);
    for (const name of names) expect(v.cookie(name), `${name} in ${JSON.stringify(header)}`).toBe(name === "" ? undefined : reference.get(name));
  });

  it("several Cookie lines read as one list, first occurrence winning", () => {
    const v = view("/", ["Cookie", "a=1; b=2", "X-Other", "z", "cookie", "b=3; c=4"]);
    expect([v.cookie("a"), v.cookie("b"), v.cookie("c")]).toEqual(["1", "2", "4"]);
  });
});

describe("header(), host and the client address from rawHeaders", () => {
  it("agree with node's own parse of a real request (repeated, mixed-case and joined headers)", async () => {
    let seen: Record<string, unknown> = {};
    const server = createServer((req: IncomingMessage, res) => {
      const v = new IncomingRequestView(req);
      seen = {
        canary: v.header("x-canary"),
        ua: v.header("user-agent"),
        list: v.header("x-list"),
        missing: v.header("x-missing"),
        host: v.host,
        cookie: v.cookie("b"),
        nodeCanary: req.headers["x-canary"],
      };
      res.end("ok");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    try {
      await new Promise<void>((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port, path: "/", agent: false }, (res) => {
          res.resume();
          res.on("end", resolve);
        });
        req.setHeader("Host", "API.example.com:8080");
        req.setHeader("X-CANARY", ["first", "second"]);
        req.setHeader("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)");
        req.setHeader("X-List", "a, b");
        req.setHeader("Cookie", ["a=1", "b=2"]);
        req.on("error", reject);
        req.end();
      });
    } finally {
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    }
    expect(seen).toEqual({
      canary: "first",
      ua: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
      list: "a, b",
      missing: undefined,
      host: "api.example.com",
      cookie: "2",
      nodeCanary: "first, second",
    });
  });
});

describe("requiredLiteral: a necessary condition for a regex match", () => {
  it.each([
    ["^Beta/[0-9]+", { literal: "Beta/", anchored: true }],
    ["^abc", { literal: "abc", anchored: true }],
    ["abc", { literal: "abc", anchored: false }],
    ["abc[0-9]", { literal: "abc", anchored: false }],
    ["ab?c", { literal: "a", anchored: false }],
    ["ab*", { literal: "a", anchored: false }],
    ["ab+", { literal: "a", anchored: false }],
    ["ab{2}", { literal: "a", anchored: false }],
    ["a😀?", { literal: "a", anchored: false }], // the quantified character is a surrogate pair
    ["^é+x", undefined],
    ["a?", undefined],
    ["^a|^b", undefined],
    ["abc|x", undefined],
    ["(a+)+$", undefined],
    ["[a-z]+", undefined],
    ["\\d+abc", undefined],
    ["(?i)abc", undefined],
    [".*", undefined],
    ["^", undefined],
    ["", undefined],
  ])("%j → %j", (pattern, expected) => {
    expect(requiredLiteral(pattern)).toEqual(expected);
  });

  it("never refuses a text the regex matches (random patterns and texts)", () => {
    let seed = 42;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const atoms = ["a", "b", "c", "ab", "^", "$", ".", "a?", "b*", "c+", "[ab]", "(ab)", "(a|b)", "b{2}", "|", "\\.", "x", "😀", "😀?"];
    const alphabet = ["a", "b", "c", "x", ".", "😀"];
    let checked = 0;
    for (let p = 0; p < 400; p++) {
      const pattern = Array.from({ length: 1 + rnd(5) }, () => atoms[rnd(atoms.length)]).join("");
      let re: RE2JS;
      try {
        re = RE2JS.compile(pattern);
      } catch {
        continue;
      }
      const lit = requiredLiteral(pattern);
      for (let t = 0; t < 60; t++) {
        const text = Array.from({ length: rnd(8) }, () => alphabet[rnd(alphabet.length)]).join("");
        if (!re.test(text) || lit === undefined) continue;
        checked++;
        if (lit.anchored) expect(text.startsWith(lit.literal), `${pattern} on ${text}`).toBe(true);
        else expect(text.includes(lit.literal), `${pattern} on ${text}`).toBe(true);
      }
    }
    expect(checked).toBeGreaterThan(100);
  });

  it("the pre-checked regex answers as the regex does", () => {
    const m = compileMatch([{ vars: [["http_user-agent", "~~", "^Beta/[0-9]+"]] }], "m");
    const ua = (v: string) => m.test(fakeView({ headers: { "user-agent": v } }));
    expect([ua("Beta/12 (X11)"), ua("Beta/x"), ua("Mozilla/5.0 Beta/12"), ua("")]).toEqual([true, false, false, false]);
    const inner = compileMatch([{ vars: [["http_x", "~~", "needle[0-9]"]] }], "m");
    const x = (v: string) => inner.test(fakeView({ headers: { x: v } }));
    expect([x("haystack needle7 hay"), x("needle"), x("needl7")]).toEqual([true, false, false]);
  });
});

describe("interned compilation", () => {
  it("identical matches share one compiled match; different ones do not", () => {
    const a = compileMatch([{ vars: [["http_x-canary", "==", "true"]] }], "rule/a.match");
    const b = compileMatch([{ vars: [["http_x-canary", "==", "true"]] }], "rule/b.match");
    const c = compileMatch([{ vars: [["http_x-canary", "==", "false"]] }], "rule/c.match");
    const d = compileMatch([{ vars: [["http_x-canary", "==", 1]] }], "rule/d.match");
    expect(b).toBe(a);
    expect(c).not.toBe(a);
    expect(d).not.toBe(a);
    expect(d.test(fakeView({ headers: { "x-canary": "1" } }))).toBe(true);
    expect(a.test(fakeView({ headers: { "x-canary": "1" } }))).toBe(false);
  });

  it("an invalid expression is refused, naming its own field, even after a valid twin was compiled", () => {
    compileMatch([{ vars: [["http_x", "==", "1"]] }], "rule/a.match");
    const err = (() => {
      try {
        compileMatch([{ vars: [["http_x", "==", "1"], ["http_y", "~~", "("]] }], "rule/b.match");
      } catch (e) {
        return e as ConfigError;
      }
      throw new Error("expected a ConfigError");
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.field).toBe("rule/b.match[0].vars[1]");
  });

  it("keeps needsJwt per match", () => {
    expect(compileMatch([{ vars: [["jwt_role", "==", "beta"]] }], "m").needsJwt).toBe(true);
    expect(compileMatch([{ vars: [["http_role", "==", "beta"]] }], "m").needsJwt).toBe(false);
  });

  it.each([
    ["header ==", ["http_x", "==", "v"], { headers: { x: "v" } }, { headers: { x: "w" } }],
    ["header ~=", ["http_x", "~=", "v"], { headers: { x: "w" } }, { headers: { x: "v" } }],
    ["header ! ==", ["http_x", "!", "==", "v"], {}, { headers: { x: "v" } }],
    ["query ==", ["arg_q", "==", "v"], { query: { q: "v" } }, {}],
    ["query ! in", ["arg_q", "!", "in", ["a", "b"]], { query: { q: "c" } }, { query: { q: "a" } }],
    ["cookie ==", ["cookie_c", "==", "v"], { cookies: { c: "v" } }, { cookies: { c: "" } }],
    ["cookie >", ["cookie_c", ">", 3], { cookies: { c: "4" } }, { cookies: { c: "3" } }],
    ["dashed fallback", ["http_x_api_id", "==", "1"], { headers: { "x-api-id": "1" } }, { headers: { "x-api-id": "2" } }],
  ])("specialised predicate %s matches and refuses as expected", (_what, expr, yes, no) => {
    const m = compileMatch([{ vars: [expr] }], "m");
    expect(m.test(fakeView(yes))).toBe(true);
    expect(m.test(fakeView(no))).toBe(false);
  });
});

import { describe, expect, it } from "vitest";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import { CidrSet, clientIp, isIp, parseCidr, parseIp, unmapIpv4 } from "../../../../data-plane/src/split/ip.js";

describe("parseIp", () => {
  const valid: [string, 4 | 6, number[]][] = [
    ["1.2.3.4", 4, [0x01020304]],
    ["0.0.0.0", 4, [0]],
    ["255.255.255.255", 4, [0xffffffff]],
    ["::", 6, [0, 0, 0, 0]],
    ["::1", 6, [0, 0, 0, 1]],
    ["2001:db8::1", 6, [0x20010db8, 0, 0, 1]],
    ["2001:DB8:0:0:0:0:0:1", 6, [0x20010db8, 0, 0, 1]],
    ["fe80::1:2", 6, [0xfe800000, 0, 0, 0x10002]],
    ["1::", 6, [0x10000, 0, 0, 0]],
    ["1:2:3:4:5:6:7::", 6, [0x10002, 0x30004, 0x50006, 0x70000]],
    ["::2:3:4:5:6:7:8", 6, [2, 0x30004, 0x50006, 0x70008]],
    ["64:ff9b::192.0.2.33", 6, [0x0064ff9b, 0, 0, 0xc0000221]],
    ["[2001:db8::1]", 6, [0x20010db8, 0, 0, 1]],
    ["fe80::1%eth0", 6, [0xfe800000, 0, 0, 1]],
    // IPv4-mapped IPv6 is the IPv4 address it carries
    ["::ffff:1.2.3.4", 4, [0x01020304]],
    ["::FFFF:0102:0304", 4, [0x01020304]],
    ["0:0:0:0:0:ffff:10.0.0.1", 4, [0x0a000001]],
  ];
  it.each(valid)("%s", (text, family, words) => {
    expect(parseIp(text)).toEqual({ family, words });
    expect(isIp(text)).toBe(true);
  });

  const invalid = [
    "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4 ", " 1.2.3.4", "1..3.4", "a.b.c.d",
    ":", ":::", "1:::2", "1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "::g", "1:2:3:4:5:6:7:8::",
    "::1.2.3", "::1.2.3.4:5", "1:", ":1", "localhost", "1.2.3.4/8",
  ];
  it.each(invalid)("refuses %j", (text) => {
    expect(parseIp(text)).toBeUndefined();
    expect(isIp(text)).toBe(false);
  });
});

describe("parseCidr", () => {
  it("clears host bits and defaults to a host route", () => {
    expect(parseCidr("10.1.2.3/8")).toEqual({ family: 4, prefix: 8, words: [0x0a000000] });
    expect(parseCidr("10.1.2.3")).toEqual({ family: 4, prefix: 32, words: [0x0a010203] });
    expect(parseCidr("2001:db8:ffff::1/33")).toEqual({ family: 6, prefix: 33, words: [0x20010db8, 0x80000000, 0, 0] });
    expect(parseCidr("::/0")).toEqual({ family: 6, prefix: 0, words: [0, 0, 0, 0] });
  });
  it.each(["10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/08", "10.0.0.0/a", "fe80::/10%eth0", "x/8"])("refuses %j", (text) => {
    expect(parseCidr(text)).toBeUndefined();
  });
});

describe("CidrSet", () => {
  const set = CidrSet.parse(
    ["10.0.0.0/8", "192.168.1.0/24", "203.0.113.7", "2001:db8::/32", "fe80::1/128", "::ffff:198.51.100.0/120"],
    "trusted_proxies",
  );
  const cases: [string, boolean][] = [
    ["10.0.0.1", true],
    ["10.255.255.255", true],
    ["11.0.0.0", false],
    ["192.168.1.200", true],
    ["192.168.2.1", false],
    ["203.0.113.7", true],
    ["203.0.113.8", false],
    ["2001:db8::1", true],
    ["2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true],
    ["2001:db9::", false],
    ["fe80::1", true],
    ["fe80::2", false],
    ["::ffff:10.9.8.7", true], // mapped address against an IPv4 block
    ["[::ffff:10.9.8.7]", true],
    ["198.51.100.20", true], // IPv4 address against a mapped IPv6 block
    ["198.51.101.20", false],
    ["::ffff:198.51.100.20", true],
    ["::10.0.0.1", false], // IPv4-compatible (deprecated) is not mapped
    ["not-an-ip", false],
    ["", false],
  ];
  it.each(cases)("%s → %s", (ip, expected) => {
    expect(set.has(ip)).toBe(expected);
  });

  it("::/0 covers IPv4 clients too (they are IPv6 mapped addresses to a dual-stack socket)", () => {
    const all = CidrSet.parse(["::/0"], "x");
    expect(all.has("8.8.8.8")).toBe(true);
    expect(all.has("2001:db8::1")).toBe(true);
    const v4only = CidrSet.parse(["0.0.0.0/0"], "x");
    expect(v4only.has("2001:db8::1")).toBe(false);
    expect(v4only.has("::ffff:8.8.8.8")).toBe(true);
  });

  it("refuses an invalid entry naming its index", () => {
    try {
      CidrSet.parse(["10.0.0.0/8", "10.0.0.0/40"], "data_plane.trusted_proxies");
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).field).toBe("data_plane.trusted_proxies[1]");
    }
  });

  it("matches many IPv4 blocks", () => {
    const many = CidrSet.parse(Array.from({ length: 1000 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`), "x");
    expect(many.has("10.3.231.9")).toBe(true); // block 999
    expect(many.has("10.3.232.9")).toBe(false);
  });
});

describe("unmapIpv4", () => {
  it.each([
    ["::ffff:1.2.3.4", "1.2.3.4"],
    ["::ffff:0a00:0001", "10.0.0.1"],
    ["[::ffff:1.2.3.4]", "1.2.3.4"],
    ["1.2.3.4", "1.2.3.4"],
    ["2001:db8::1", "2001:db8::1"],
    ["::1", "::1"],
    ["garbage", "garbage"],
  ])("%s → %s", (input, output) => {
    expect(unmapIpv4(input)).toBe(output);
  });
});

describe("clientIp", () => {
  const trusted = CidrSet.parse(["10.0.0.0/8", "2001:db8::/32"], "trusted_proxies");
  const cases: [string, string | undefined, string | undefined, CidrSet | undefined, string][] = [
    ["no trusted proxies: socket, XFF ignored", "198.51.100.1", "1.1.1.1", undefined, "198.51.100.1"],
    ["empty trusted set: socket", "198.51.100.1", "1.1.1.1", CidrSet.EMPTY, "198.51.100.1"],
    ["mapped socket address unmapped", "::ffff:198.51.100.1", undefined, undefined, "198.51.100.1"],
    ["untrusted peer: XFF is forged", "198.51.100.1", "1.1.1.1", trusted, "198.51.100.1"],
    ["trusted peer, no XFF", "10.0.0.5", undefined, trusted, "10.0.0.5"],
    ["one trusted hop", "10.0.0.5", "1.1.1.1", trusted, "1.1.1.1"],
    ["right-most untrusted wins over a spoofed left part", "10.0.0.5", "6.6.6.6, 1.1.1.1, 10.0.0.9", trusted, "1.1.1.1"],
    ["all trusted: left-most", "10.0.0.5", "10.0.0.1, 10.0.0.2", trusted, "10.0.0.1"],
    ["blanks and empty elements", "10.0.0.5", " 1.1.1.1 ,, 10.0.0.2 ,", trusted, "1.1.1.1"],
    ["IPv6 chain", "2001:db8::1", "2606:4700::1111, 2001:db8::2", trusted, "2606:4700::1111"],
    ["mapped entries", "::ffff:10.0.0.5", "::ffff:1.1.1.1, ::ffff:10.0.0.2", trusted, "1.1.1.1"],
    ["ports and brackets", "10.0.0.5", "[2606:4700::1111]:443, 1.1.1.1:5678, 10.0.0.7:80", trusted, "1.1.1.1"],
    ["bracketed IPv6 client", "10.0.0.5", "[2606:4700::1111]:443", trusted, "2606:4700::1111"],
    ["garbage stops at the trusted hop that reported it", "10.0.0.5", "1.1.1.1, unknown, 10.0.0.2", trusted, "10.0.0.2"],
    ["garbage right away: the peer", "10.0.0.5", "1.1.1.1, unknown", trusted, "10.0.0.5"],
    ["no socket address", undefined, undefined, trusted, ""],
  ];
  it.each(cases)("%s", (_name, socket, xff, set, expected) => {
    expect(clientIp(socket, xff, set)).toBe(expected);
  });
});

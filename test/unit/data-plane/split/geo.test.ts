import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../../../../data-plane/src/config/errors.js";
import { openCountryDb, type CountryDb } from "../../../../data-plane/src/split/geo.js";

const require = createRequire(import.meta.url);
const SHIPPED = join(dirname(require.resolve("@ip-location-db/geo-whois-asn-country-mmdb/package.json")), "geo-whois-asn-country.mmdb");

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "geo-test-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("openCountryDb with the shipped ip-location-db database ({country_code} records)", () => {
  let db: CountryDb;
  beforeAll(async () => {
    db = await openCountryDb(SHIPPED);
  });

  // Countries read from this database itself (its records are {country_code}).
  it.each([
    ["8.8.8.8", "US"],
    ["1.1.1.1", "AU"],
    ["193.0.6.139", "NL"], // RIPE NCC
    ["80.67.169.12", "FR"], // FDN
    ["133.242.0.1", "JP"],
    ["2001:4860:4860::8888", "US"],
    ["::ffff:8.8.8.8", "US"], // what a dual-stack socket reports for an IPv4 client
  ])("%s → %s", (ip, country) => {
    expect(db.country(ip)).toBe(country);
  });

  // 192.168.1.1 and 203.0.113.5 are "AU" in this database: special-purpose ranges must not be.
  it.each(["10.0.0.1", "127.0.0.1", "192.168.1.1", "203.0.113.5", "::1", "fd00::1", "::ffff:192.168.1.1", "not-an-ip", "", "1.2.3.4.5"])("%j → undefined", (ip) => {
    expect(db.country(ip)).toBeUndefined();
  });
});

// MMDB writer for one-node IPv4 databases: enough to serve a GeoLite2-shaped record without
// shipping MaxMind's licensed data. Format: https://maxmind.github.io/MaxMind-DB/
const str = (s: string): number[] => [(2 << 5) | s.length, ...Buffer.from(s)];
const u16 = (v: number): number[] => [(5 << 5) | 2, v >> 8, v & 0xff];
const u32 = (v: number): number[] => [(6 << 5) | 4, (v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
const map = (entries: [string, number[]][]): number[] => [(7 << 5) | entries.length, ...entries.flatMap(([k, v]) => [...str(k), ...v])];
const emptyArray = [0x00, 11 - 7];
const u24 = (v: number): number[] => [(v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];

/** 0.0.0.0/1 → `left`, 128.0.0.0/1 → `right` (undefined: no data). */
function tinyMmdb(left: number[], right: number[] | undefined): Buffer {
  const nodeCount = 1;
  const data = [...left, ...(right ?? [])];
  const tree = [...u24(nodeCount + 16), ...u24(right === undefined ? nodeCount : nodeCount + 16 + left.length)];
  const metadata = map([
    ["binary_format_major_version", u16(2)],
    ["binary_format_minor_version", u16(0)],
    ["build_epoch", u32(1_700_000_000)],
    ["database_type", str("GeoLite2-Country")],
    ["description", map([])],
    ["ip_version", u16(4)],
    ["languages", emptyArray],
    ["node_count", u32(nodeCount)],
    ["record_size", u16(24)],
  ]);
  return Buffer.from([...tree, ...new Array(16).fill(0), ...data, 0xab, 0xcd, 0xef, ...Buffer.from("MaxMind.com"), ...metadata]);
}

describe("openCountryDb with MaxMind GeoLite2-shaped records", () => {
  it("reads country.iso_code", async () => {
    const path = join(dir, "country.mmdb");
    await writeFile(path, tinyMmdb(map([["country", map([["iso_code", str("DE")]])]]), undefined));
    const db = await openCountryDb(path);
    expect(db.country("8.8.8.8")).toBe("DE");
    expect(db.country("200.1.1.1")).toBeUndefined();
  });

  it("falls back to registered_country.iso_code", async () => {
    const path = join(dir, "registered.mmdb");
    await writeFile(
      path,
      tinyMmdb(map([["continent", map([["code", str("EU")]])]]), map([["registered_country", map([["iso_code", str("se")]])]])),
    );
    const db = await openCountryDb(path);
    expect(db.country("200.1.1.1")).toBe("SE");
    expect(db.country("8.8.8.8")).toBeUndefined(); // a record without any country
  });
});

describe("openCountryDb errors", () => {
  it("names the field for a missing file", async () => {
    const err = await openCountryDb(join(dir, "missing.mmdb"), "data_plane.geo_db").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).field).toBe("data_plane.geo_db");
  });

  it("names the field for a file that is not a database", async () => {
    const path = join(dir, "junk.mmdb");
    await writeFile(path, "not a database at all");
    const err = await openCountryDb(path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).field).toBe("geo_db_path");
  });
});

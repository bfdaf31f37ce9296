/**
 * Country of a client address, for the `geo_country` match variable.
 *
 * Reads MaxMind-format (.mmdb) databases with the `maxmind` package. Two record shapes are in use
 * and both are read: MaxMind GeoLite2/GeoIP2 Country (`{ country: { iso_code } }`, falling back to
 * `registered_country` for addresses MaxMind only knows by registration) and the free
 * ip-location-db databases (`{ country_code }`).
 */
import { open, type Reader, type Response } from "maxmind";
import { ConfigError } from "../config/errors.js";
import { CidrSet, isIp, unmapIpv4 } from "./ip.js";

/** Looks up the ISO 3166-1 alpha-2 country of an address. */
export interface CountryDb {
  /** Upper-case ISO code, or undefined for special-purpose (private, loopback, documentation…), unknown or malformed addresses. */
  country(ip: string): string | undefined;
}

interface CountryRecord {
  country_code?: unknown;
  country?: { iso_code?: unknown };
  registered_country?: { iso_code?: unknown };
}

/**
 * Special-purpose ranges (RFC 6890 and friends) that have no country. Free databases built from
 * registry data do assign some of them one (192.168.0.0/16 comes back "AU" from ip-location-db),
 * and a private client address must not be routed as if it were abroad.
 */
const NO_COUNTRY = CidrSet.parse(
  [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/3", "::/127", "64:ff9b:1::/48", "100::/64", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "ff00::/8",
  ],
  "NO_COUNTRY",
);

/** Records the reader keeps decoded: client addresses repeat, and decoding a record is not free. */
const CACHE_ENTRIES = 10_000;

/**
 * Opens a country database from a file. Errors (missing file, not an mmdb) are ConfigErrors naming
 * `field`, so a data plane refuses the setting with the same words as any other bad configuration.
 */
export async function openCountryDb(path: string, field = "geo_db_path"): Promise<CountryDb> {
  let reader: Reader<Response>;
  try {
    reader = await open(path, { cache: { max: CACHE_ENTRIES } });
  } catch (err) {
    throw new ConfigError(field, `cannot open country database ${JSON.stringify(path)}: ${(err as Error).message}`);
  }
  return new MmdbCountryDb(reader);
}

/** A country database over an open mmdb reader. */
class MmdbCountryDb implements CountryDb {
  constructor(private readonly reader: Reader<Response>) {}

  country(ip: string): string | undefined {
    // The databases index IPv4 in its own subtree; the mapped IPv6 form would miss it.
    const addr = unmapIpv4(ip);
    if (!isIp(addr) || NO_COUNTRY.has(addr)) return undefined;
    let record: CountryRecord | null;
    try {
      record = this.reader.get(addr) as CountryRecord | null;
    } catch {
      return undefined;
    }
    return record === null ? undefined : isoCode(record);
  }
}

function isoCode(record: CountryRecord): string | undefined {
  const code = record.country_code ?? record.country?.iso_code ?? record.registered_country?.iso_code;
  return typeof code === "string" && code.length > 0 ? code.toUpperCase() : undefined;
}

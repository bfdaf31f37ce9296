/**
 * IP addresses and CIDR sets for the request path: `ipmatch` expressions and trusted-proxy handling
 * (X-Forwarded-For) share one parser and one matcher.
 *
 * Addresses are parsed by hand from string ranges into 32-bit words (IPv4 as one uint32, IPv6 as
 * four), never through BigInt or intermediate strings, so testing a request's address against a
 * set allocates nothing. An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, what a dual-stack socket
 * reports for IPv4 clients) is treated as the IPv4 address it carries, so `10.0.0.0/8` matches it.
 */
import { ConfigError } from "../config/errors.js";

/** A parsed address, for configuration-time code and tests (the hot path never builds one). */
export interface IpAddress {
  /** 4 or 6; an IPv4-mapped IPv6 address parses as family 4. */
  readonly family: 4 | 6;
  /** One uint32 for IPv4, four (most significant first) for IPv6. */
  readonly words: readonly number[];
}

/** A parsed CIDR block, host bits cleared. */
export interface Cidr extends IpAddress {
  /** Prefix length: 0-32 for IPv4, 0-128 for IPv6. */
  readonly prefix: number;
}

// Parser output. JavaScript is single-threaded and the parser never re-enters itself, so one
// module-level scratch buffer lets every parse run without allocating.
const WORDS = new Uint32Array(4);
const GROUPS = new Uint16Array(8);
const FAMILY_INVALID = 0;

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  if (c >= 97 && c <= 102) return c - 87; // a-f
  if (c >= 65 && c <= 70) return c - 55; // A-F
  return -1;
}

/**
 * Dotted-quad IPv4 in s[start, end) as a uint32, or -1. Leading zeros are refused: "010" is octal
 * to some parsers and decimal to others, and an address both sides disagree on must not match.
 */
function parseV4(s: string, start: number, end: number): number {
  let value = 0;
  let octets = 0;
  let i = start;
  while (octets < 4) {
    if (i >= end) return -1;
    const first = i;
    let octet = 0;
    while (i < end) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) break;
      octet = octet * 10 + (c - 48);
      i++;
    }
    const digits = i - first;
    if (digits === 0 || digits > 3 || octet > 255 || (digits > 1 && s.charCodeAt(first) === 48)) return -1;
    value = value * 256 + octet;
    octets++;
    if (octets < 4) {
      if (i >= end || s.charCodeAt(i) !== 46 /* . */) return -1;
      i++;
    }
  }
  return i === end ? value : -1;
}

/** IPv6 in s[start, end) into WORDS (raw: no unmapping). */
function parseV6(s: string, start: number, end: number): boolean {
  let i = start;
  let n = 0; // groups written
  let gap = -1; // group index where "::" stands
  if (end - start < 2) return false;
  if (s.charCodeAt(i) === 58 /* : */) {
    if (s.charCodeAt(i + 1) !== 58) return false;
    gap = 0;
    i += 2;
  }
  while (i < end) {
    const segment = i;
    let value = 0;
    while (i < end && i - segment < 5) {
      const h = hexValue(s.charCodeAt(i));
      if (h < 0) break;
      value = value * 16 + h;
      i++;
    }
    if (i < end && s.charCodeAt(i) === 46 /* . */) {
      // Embedded IPv4 tail ("::ffff:1.2.3.4"): it must be last and fills two groups.
      const v4 = parseV4(s, segment, end);
      if (v4 < 0 || n > 6) return false;
      GROUPS[n++] = v4 >>> 16;
      GROUPS[n++] = v4 & 0xffff;
      i = end;
      break;
    }
    const digits = i - segment;
    if (digits === 0 || digits > 4 || n >= 8) return false;
    GROUPS[n++] = value;
    if (i === end) break;
    if (s.charCodeAt(i) !== 58) return false;
    i++;
    if (i < end && s.charCodeAt(i) === 58) {
      if (gap >= 0) return false;
      gap = n;
      i++;
    } else if (i === end) {
      return false; // a single trailing colon
    }
  }
  if (gap >= 0) {
    if (n > 7) return false;
    const tail = n - gap;
    for (let k = 0; k < tail; k++) GROUPS[7 - k] = GROUPS[n - 1 - k];
    for (let k = gap; k < 8 - tail; k++) GROUPS[k] = 0;
  } else if (n !== 8) {
    return false;
  }
  for (let k = 0; k < 4; k++) WORDS[k] = ((GROUPS[2 * k] << 16) | GROUPS[2 * k + 1]) >>> 0;
  return true;
}

function isMappedV4(): boolean {
  return WORDS[0] === 0 && WORDS[1] === 0 && WORDS[2] === 0xffff;
}

/**
 * Parses an address in s[start, end) into WORDS and returns its family (0 when invalid). A
 * bracketed IPv6 ("[::1]") and a zone suffix ("fe80::1%eth0") are accepted, as sockets and
 * proxies write them; a mapped IPv4 comes back as family 4 in WORDS[0].
 */
function parseAddressRange(s: string, start: number, end: number): number {
  if (end - start >= 2 && s.charCodeAt(start) === 91 /* [ */ && s.charCodeAt(end - 1) === 93 /* ] */) {
    start++;
    end--;
  }
  const zone = s.indexOf("%", start);
  if (zone >= 0 && zone < end) end = zone;
  const colon = s.indexOf(":", start);
  if (colon < 0 || colon >= end) {
    const v4 = parseV4(s, start, end);
    if (v4 < 0) return FAMILY_INVALID;
    WORDS[0] = v4;
    return 4;
  }
  if (!parseV6(s, start, end)) return FAMILY_INVALID;
  if (isMappedV4()) {
    WORDS[0] = WORDS[3];
    return 4;
  }
  return 6;
}

/** Parses an IPv4 or IPv6 address; undefined when it is not one. For configuration and tests. */
export function parseIp(text: string): IpAddress | undefined {
  const family = parseAddressRange(text, 0, text.length);
  if (family === 4) return { family: 4, words: [WORDS[0]] };
  if (family === 6) return { family: 6, words: [WORDS[0], WORDS[1], WORDS[2], WORDS[3]] };
  return undefined;
}

/** Whether `text` is an IPv4 or IPv6 address (brackets and zone allowed, as in parseIp). */
export function isIp(text: string): boolean {
  return parseAddressRange(text, 0, text.length) !== FAMILY_INVALID;
}

function formatV4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

/**
 * The dotted IPv4 form of an IPv4-mapped IPv6 address, else `text` unchanged. Dual-stack sockets
 * report IPv4 clients as "::ffff:1.2.3.4"; operators write "1.2.3.4" in rules and expect
 * `remote_addr == "1.2.3.4"` and geo lookups to work.
 */
export function unmapIpv4(text: string): string {
  if (text.indexOf(":") < 0) return text; // IPv4 or not an address: nothing to unmap
  const end = text.length;
  let start = 0;
  let stop = end;
  if (end >= 2 && text.charCodeAt(0) === 91 && text.charCodeAt(end - 1) === 93) {
    start = 1;
    stop = end - 1;
  }
  if (!parseV6(text, start, stop) || !isMappedV4()) return text;
  return formatV4(WORDS[3]);
}

/** Parses "addr/prefix" or a bare address (a host route); undefined when invalid. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  let prefix: number;
  let addrEnd = text.length;
  if (slash >= 0) {
    const digits = text.length - slash - 1;
    if (digits < 1 || digits > 3) return undefined;
    prefix = 0;
    for (let i = slash + 1; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) return undefined;
      prefix = prefix * 10 + (c - 48);
    }
    if (digits > 1 && text.charCodeAt(slash + 1) === 48) return undefined;
    addrEnd = slash;
  } else {
    prefix = -1;
  }
  if (text.indexOf("%") >= 0) return undefined; // a zone has no meaning in a network block
  const colon = text.indexOf(":");
  if (colon < 0 || colon >= addrEnd) {
    const v4 = parseV4(text, 0, addrEnd);
    if (v4 < 0) return undefined;
    if (prefix < 0) prefix = 32;
    if (prefix > 32) return undefined;
    return { family: 4, prefix, words: [(v4 & maskV4(prefix)) >>> 0] };
  }
  if (!parseV6(text, 0, addrEnd)) return undefined;
  if (prefix < 0) prefix = 128;
  if (prefix > 128) return undefined;
  const words: number[] = [];
  for (let k = 0; k < 4; k++) words.push((WORDS[k] & maskWord(prefix, k)) >>> 0);
  return { family: 6, prefix, words };
}

function maskV4(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Mask of word k (0-3) of an IPv6 prefix. */
function maskWord(prefix: number, k: number): number {
  const bits = prefix - 32 * k;
  if (bits <= 0) return 0;
  if (bits >= 32) return 0xffffffff;
  return (0xffffffff << (32 - bits)) >>> 0;
}

/**
 * An immutable set of CIDR blocks (IPv4 and IPv6), built once per snapshot.
 *
 * IPv4 blocks are grouped by prefix length into hash sets, so a lookup costs one set probe per
 * distinct prefix length (at most 33) whatever the number of blocks. IPv6 blocks are scanned
 * linearly: lists in rules and trusted-proxy settings are short, and four word compares per block
 * are cheaper than building a key.
 */
export class CidrSet {
  /** An empty set (matches nothing), for callers that want a value rather than undefined. */
  static readonly EMPTY = new CidrSet([]);

  private readonly v4Masks: number[] = [];
  private readonly v4Nets: Set<number>[] = [];
  private readonly v6Nets: Uint32Array;
  private readonly v6Masks: Uint32Array;
  private readonly v6Count: number;
  /** Number of blocks as configured. */
  readonly size: number;

  /**
   * Parses a list of CIDRs or addresses, refusing the first invalid one with a ConfigError naming
   * `${field}[i]`, so the control plane and the data plane reject the same configuration.
   */
  static parse(list: readonly string[], field: string): CidrSet {
    const blocks: Cidr[] = [];
    for (let i = 0; i < list.length; i++) {
      const item = list[i];
      const cidr = typeof item === "string" ? parseCidr(item.trim()) : undefined;
      if (cidr === undefined) {
        throw new ConfigError(`${field}[${i}]`, `not an IP address or CIDR: ${JSON.stringify(item)}`);
      }
      blocks.push(cidr);
    }
    return new CidrSet(blocks);
  }

  /** Builds a set from parsed blocks (see parseCidr). */
  constructor(blocks: readonly Cidr[]) {
    this.size = blocks.length;
    const byPrefix = new Map<number, Set<number>>();
    const addV4 = (prefix: number, net: number): void => {
      let set = byPrefix.get(prefix);
      if (set === undefined) byPrefix.set(prefix, (set = new Set()));
      set.add((net & maskV4(prefix)) >>> 0);
    };
    const v6: Cidr[] = [];
    for (const b of blocks) {
      if (b.family === 4) {
        addV4(b.prefix, b.words[0]);
        continue;
      }
      v6.push(b);
      // Mapped clients are matched as IPv4, so an IPv6 block that covers (part of) the mapped
      // range ::ffff:0:0/96 must also be expressed as the IPv4 block it covers.
      const mappedPrefixBits = Math.min(b.prefix, 96);
      const coversMapped =
        (b.words[0] & maskWord(mappedPrefixBits, 0)) === 0 &&
        (b.words[1] & maskWord(mappedPrefixBits, 1)) === 0 &&
        ((0xffff ^ b.words[2]) & maskWord(mappedPrefixBits, 2)) === 0;
      if (coversMapped) addV4(Math.max(0, b.prefix - 96), b.prefix > 96 ? b.words[3] : 0);
    }
    const prefixes = [...byPrefix.keys()].sort((a, b) => b - a);
    for (const p of prefixes) {
      this.v4Masks.push(maskV4(p));
      this.v4Nets.push(byPrefix.get(p)!);
    }
    this.v6Count = v6.length;
    this.v6Nets = new Uint32Array(4 * v6.length);
    this.v6Masks = new Uint32Array(4 * v6.length);
    v6.forEach((b, i) => {
      for (let k = 0; k < 4; k++) {
        this.v6Masks[4 * i + k] = maskWord(b.prefix, k);
        this.v6Nets[4 * i + k] = b.words[k];
      }
    });
  }

  /** Whether `ip` is an address inside one of the blocks; false for anything that is not an address. */
  has(ip: string): boolean {
    return this.hasRange(ip, 0, ip.length);
  }

  /**
   * As `has`, for the address in ip[start, end): lets X-Forwarded-For be walked without slicing
   * the header into strings.
   */
  hasRange(ip: string, start: number, end: number): boolean {
    const family = parseAddressRange(ip, start, end);
    return family !== FAMILY_INVALID && this.matchParsed(family);
  }

  private matchParsed(family: number): boolean {
    if (family === 4) {
      const addr = WORDS[0];
      const masks = this.v4Masks;
      for (let i = 0; i < masks.length; i++) {
        if (this.v4Nets[i].has((addr & masks[i]) >>> 0)) return true;
      }
      return false;
    }
    const nets = this.v6Nets;
    const ms = this.v6Masks;
    const w0 = WORDS[0], w1 = WORDS[1], w2 = WORDS[2], w3 = WORDS[3];
    for (let i = 0, o = 0; i < this.v6Count; i++, o += 4) {
      if (
        ((w0 & ms[o]) >>> 0) === nets[o] &&
        ((w1 & ms[o + 1]) >>> 0) === nets[o + 1] &&
        ((w2 & ms[o + 2]) >>> 0) === nets[o + 2] &&
        ((w3 & ms[o + 3]) >>> 0) === nets[o + 3]
      ) {
        return true;
      }
    }
    return false;
  }
}

// Bounds of the host part of an X-Forwarded-For entry, set by hostBounds (no allocation).
let hostStart = 0;
let hostEnd = 0;

/**
 * Narrows s[start, end) to the address of one forwarded-for entry: trims blanks and drops a port
 * some proxies append ("1.2.3.4:5678", "[2001:db8::1]:443").
 */
function hostBounds(s: string, start: number, end: number): void {
  while (start < end && (s.charCodeAt(start) === 32 || s.charCodeAt(start) === 9)) start++;
  while (end > start && (s.charCodeAt(end - 1) === 32 || s.charCodeAt(end - 1) === 9)) end--;
  if (start < end && s.charCodeAt(start) === 91 /* [ */) {
    const close = s.indexOf("]", start);
    if (close > start && close < end) {
      start++;
      end = close;
    }
  } else {
    const colon = s.indexOf(":", start);
    // Exactly one colon and a dot before it: IPv4 with a port. IPv6 has at least two colons.
    if (colon >= 0 && colon < end && colonIsLast(s, colon, end)) {
      const dot = s.indexOf(".", start);
      if (dot >= 0 && dot < colon) end = colon;
    }
  }
  hostStart = start;
  hostEnd = end;
}

function colonIsLast(s: string, colon: number, end: number): boolean {
  const next = s.indexOf(":", colon + 1);
  return next < 0 || next >= end;
}

/**
 * The client address for `remote_addr`, rate limiting and logs.
 *
 * Without trusted proxies it is the socket peer: X-Forwarded-For is client-controlled and must not
 * be believed. With trusted proxies, the chain (X-Forwarded-For entries, then the socket peer as the
 * last hop) is walked from the right: each trusted hop vouches for the entry to its left, and the
 * first address that is not trusted is the client. If every hop is trusted, the left-most entry is
 * the best we know. An unparsable entry ends the walk at the trusted hop that reported it, because
 * nothing to its left can be vouched for. IPv4-mapped addresses come back in dotted form.
 */
export function clientIp(socketAddr: string | undefined, xffHeader: string | undefined, trusted: CidrSet | undefined): string {
  const peer = socketAddr === undefined ? "" : unmapIpv4(socketAddr);
  if (trusted === undefined || trusted.size === 0 || xffHeader === undefined || xffHeader.length === 0) return peer;
  if (!trusted.has(peer)) return peer;
  let end = xffHeader.length;
  let lastStart = -1; // left-most trusted entry walked so far
  let lastEnd = -1;
  while (end > 0) {
    const comma = xffHeader.lastIndexOf(",", end - 1);
    hostBounds(xffHeader, comma + 1, end);
    end = comma < 0 ? 0 : comma;
    const s = hostStart;
    const e = hostEnd;
    if (s === e) continue; // empty list element ("a,,b" or a trailing comma)
    const family = parseAddressRange(xffHeader, s, e);
    if (family === FAMILY_INVALID) break;
    if (!trusted.hasRange(xffHeader, s, e)) return unmapIpv4(xffHeader.slice(s, e));
    lastStart = s;
    lastEnd = e;
  }
  return lastStart < 0 ? peer : unmapIpv4(xffHeader.slice(lastStart, lastEnd));
}

/**
 * MurmurHash3 (x86, 32-bit) of a string's UTF-8 bytes.
 *
 * Consistent hashing is only consistent if every data plane, of every version, maps a key to the
 * same point: so the hash is a fixed, published algorithm over UTF-8 (what any other language
 * would hash), never a runtime's string hash. The bytes are produced on the fly from UTF-16 code
 * units, so hashing a request key allocates nothing. Lone surrogates hash as U+FFFD, as
 * `Buffer.from(s, "utf8")` and TextEncoder encode them.
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function mixBlock(h: number, k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** MurmurHash3's finaliser: a bijection on 32 bits with full avalanche (also used to mix ids' hashes). */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** 32-bit MurmurHash3 of the UTF-8 encoding of `input`; stable across processes, versions and platforms. */
export function murmur3(input: string, seed = 0): number {
  let h = seed | 0;
  let block = 0; // little-endian bytes not yet mixed
  let filled = 0; // how many bytes `block` holds
  let length = 0;
  const n = input.length;
  for (let i = 0; i < n; i++) {
    let cp = input.charCodeAt(i);
    if (filled === 0 && i + 3 < n) {
      // Fast path for request keys, which are almost always ASCII: four characters, one block.
      const c1 = input.charCodeAt(i + 1);
      const c2 = input.charCodeAt(i + 2);
      const c3 = input.charCodeAt(i + 3);
      if ((cp | c1 | c2 | c3) < 0x80) {
        h = mixBlock(h, cp | (c1 << 8) | (c2 << 16) | (c3 << 24));
        length += 4;
        i += 3;
        continue;
      }
    }
    if (cp < 0x80) {
      block |= cp << (filled << 3);
      length++;
      if (++filled === 4) {
        h = mixBlock(h, block);
        block = 0;
        filled = 0;
      }
      continue;
    }
    let bytes: number; // UTF-8 bytes packed little-endian: first byte in the low 8 bits
    let count: number;
    if (cp < 0x800) {
      bytes = (0xc0 | (cp >>> 6)) | ((0x80 | (cp & 0x3f)) << 8);
      count = 2;
    } else {
      if (cp >= 0xd800 && cp <= 0xdfff) {
        const low = i + 1 < n ? input.charCodeAt(i + 1) : 0;
        if (cp <= 0xdbff && low >= 0xdc00 && low <= 0xdfff) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          i++;
        } else {
          cp = 0xfffd;
        }
      }
      if (cp < 0x10000) {
        bytes = (0xe0 | (cp >>> 12)) | ((0x80 | ((cp >>> 6) & 0x3f)) << 8) | ((0x80 | (cp & 0x3f)) << 16);
        count = 3;
      } else {
        bytes =
          (0xf0 | (cp >>> 18)) |
          ((0x80 | ((cp >>> 12) & 0x3f)) << 8) |
          ((0x80 | ((cp >>> 6) & 0x3f)) << 16) |
          ((0x80 | (cp & 0x3f)) << 24);
        count = 4;
      }
    }
    length += count;
    for (let b = 0; b < count; b++) {
      block |= (bytes & 0xff) << (filled << 3);
      bytes >>>= 8;
      if (++filled === 4) {
        h = mixBlock(h, block);
        block = 0;
        filled = 0;
      }
    }
  }
  if (filled > 0) {
    let k = Math.imul(block, C1);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, C2);
  }
  return fmix32(h ^ length);
}

/**
 * 32-bit MurmurHash3 of three 32-bit words as 12 little-endian bytes. Placing ring points hashes
 * (key hash, key hash, replica) with it, so a target's hundreds of points cost a few multiplies
 * each instead of hashing a "<key>#<replica>" string per point.
 */
export function murmur3Words(a: number, b: number, c: number, seed = 0): number {
  let h = mixBlock(seed | 0, a | 0);
  h = mixBlock(h, b | 0);
  h = mixBlock(h, c | 0);
  return fmix32(h ^ 12);
}

import { describe, expect, it } from "vitest";
import { murmur3, murmur3Words } from "../../../../data-plane/src/balancer/hash.js";
import { seeded } from "./helpers.js";

/** MurmurHash3 x86_32 over a byte array, written plainly, to check the streaming UTF-8 version. */
function murmur3Bytes(bytes: Uint8Array, seed = 0): number {
  const mix = (k: number) => Math.imul(((x) => (x << 15) | (x >>> 17))(Math.imul(k, 0xcc9e2d51)), 0x1b873593);
  let h = seed | 0;
  const blocks = bytes.length >>> 2;
  for (let b = 0; b < blocks; b++) {
    const k = bytes[4 * b] | (bytes[4 * b + 1] << 8) | (bytes[4 * b + 2] << 16) | (bytes[4 * b + 3] << 24);
    h ^= mix(k);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  let tail = 0;
  for (let i = bytes.length - 1; i >= 4 * blocks; i--) tail = (tail << 8) | bytes[i];
  if ((bytes.length & 3) !== 0) h ^= mix(tail);
  h ^= bytes.length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

describe("murmur3", () => {
  it.each([
    { input: "", seed: 0, expected: 0 },
    { input: "", seed: 1, expected: 0x514e28b7 },
    { input: "", seed: 0xffffffff, expected: 0x81f16f39 },
    { input: "test", seed: 0, expected: 0xba6bd213 },
    { input: "Hello, world!", seed: 0, expected: 0xc0363e43 },
    { input: "The quick brown fox jumps over the lazy dog", seed: 0, expected: 0x2e4ff723 },
  ])("matches the published value for $input (seed $seed)", ({ input, seed, expected }) => {
    expect(murmur3(input, seed)).toBe(expected);
  });

  it.each([
    "a",
    "ab",
    "abc",
    "héllo",
    "日本語のキー",
    "emoji 🙂 and 𝄞",
    "lone \ud800 high",
    "lone \udc00 low",
    "end \ud83d",
    "ß".repeat(7),
  ])("hashes the UTF-8 bytes of %j", (input) => {
    expect(murmur3(input)).toBe(murmur3Bytes(Buffer.from(input, "utf8")));
    expect(murmur3(input, 42)).toBe(murmur3Bytes(Buffer.from(input, "utf8"), 42));
  });

  it.each([
    [0, 0, 0],
    [1, 2, 3],
    [0xffffffff, 0x80000000, 7],
    [0xdeadbeef, 0x12345678, 511],
  ])("murmur3Words(%i, %i, %i) hashes the 12 little-endian bytes", (a, b, c) => {
    const bytes = Buffer.alloc(12);
    bytes.writeUInt32LE(a, 0);
    bytes.writeUInt32LE(b, 4);
    bytes.writeUInt32LE(c, 8);
    expect(murmur3Words(a, b, c)).toBe(murmur3Bytes(bytes));
    expect(murmur3Words(a, b, c, 9)).toBe(murmur3Bytes(bytes, 9));
  });

  it("agrees with the byte reference on random strings", () => {
    const random = seeded(7);
    for (let n = 0; n < 2000; n++) {
      const length = Math.floor(random() * 24);
      // Mostly ASCII with some wider characters, so the four-at-a-time path is entered and left.
      const char = () => Math.floor(random() * (random() < 0.8 ? 0x80 : 0x10000));
      const input = String.fromCharCode(...Array.from({ length }, char));
      expect(murmur3(input)).toBe(murmur3Bytes(Buffer.from(input, "utf8")));
    }
  });
});

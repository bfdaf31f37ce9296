/**
 * Precomputed target sequences, shared by the algorithms that resolve a pick by indexing a table
 * built once per target list (the smooth weighted round-robin cycle, the hash ring, the
 * round-robin rotation), and the check of the positions that index them.
 */

/** A sequence of target indices, stored in the narrowest unsigned width that fits. */
export type IndexArray = Uint8Array | Uint16Array | Uint32Array;

/**
 * Allocates a table of `length` indices into a list of `count` targets, one byte per entry for up
 * to 256 targets: a million-entry cycle then costs 1 MB instead of 8 MB as a plain array.
 */
export function indexArray(count: number, length: number): IndexArray {
  if (count <= 0x100) return new Uint8Array(length);
  if (count <= 0x10000) return new Uint16Array(length);
  return new Uint32Array(length);
}

/**
 * For each slot, the target at the first later slot (cyclically) that holds a different target, so
 * "avoid this target" is one table read instead of a scan over a long run of the same target (a
 * 999:1 weighted cycle has runs of hundreds). Slots of a sequence with a single distinct target
 * map to themselves; callers only consult the result when another target exists.
 */
export function nextDistinct<A extends IndexArray>(sequence: A): A {
  const length = sequence.length;
  const result = sequence.slice() as A;
  if (length === 0) return result;
  // Two laps backwards: the first settles the wrap-around, the second makes every slot exact.
  for (let lap = 0; lap < 2; lap++) {
    const last = length - 1;
    result[last] = sequence[0] !== sequence[last] ? sequence[0] : result[0];
    for (let p = last - 1; p >= 0; p--) {
      result[p] = sequence[p + 1] !== sequence[p] ? sequence[p + 1] : result[p + 1];
    }
  }
  return result;
}

/**
 * Checks a fleet-wide sequence position, because a negative or fractional position from a broken
 * counter would otherwise index past a table and hand the proxy `undefined` as a target.
 */
export function checkPosition(position: number, cycle: number, algorithm: string): void {
  if (cycle === 0) throw new RangeError(`${algorithm}: pickAt on a balancer without targets`);
  if (!Number.isSafeInteger(position) || position < 0) {
    throw new RangeError(`${algorithm}: position must be a non-negative safe integer, got ${position}`);
  }
}

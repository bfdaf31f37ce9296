// Cost of one pick per load-balancing algorithm, at 10, 100 and 1,000 targets.
//
// A benchmark, not a test: it asserts nothing. Run against the compiled output:
//   npx tsc -p tsconfig.json && node test/bench/balancer.mjs
// Each cell is the median of several timed runs after a warm-up, so the JIT has settled and one
// noisy run (these machines are shared) does not decide the figure. Compare rows within one run.

import { createBalancer } from "../../dist/data-plane/src/balancer/factory.js";

const SIZES = [10, 100, 1000];
const RUNS = 7;
const PICKS_PER_RUN = 200_000;
const WARMUP_PICKS = 300_000;

/** Deterministic weights 1..10 and loads, so every run measures the same lists. */
function makeTargets(n) {
  let seed = 12345;
  const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296;
  return Array.from({ length: n }, (_, i) => ({
    key: `10.0.${i >> 8}.${i & 255}:8080`,
    weight: 1 + Math.floor(next() * 10),
    load: { inFlight: Math.floor(next() * 20), fleetInFlight: Math.floor(next() * 200) },
  }));
}

const hashKeys = Array.from({ length: 4096 }, (_, i) => `user-${(i * 2654435761) >>> 0}`);

// Every cell gets its own copy of the timing loop (new Function), so call sites the JIT
// specialises for one algorithm do not turn megamorphic and slow down the next one.
function makeLoop(expression) {
  return new Function(
    "b",
    "picks",
    "offset",
    "keys",
    "targets",
    `let sum = 0;
     for (let k = 0; k < picks; k++) { const t = ${expression}; sum += t.weight; }
     return sum;`,
  );
}

const cases = [
  { name: "baseline: array index", algorithm: "round-robin", pick: "targets[(offset + k) % targets.length]" },
  { name: "round-robin pick()", algorithm: "round-robin", pick: "b.pick()" },
  { name: "round-robin pickAt(p)", algorithm: "round-robin", pick: "b.pickAt(offset + k)" },
  { name: "weighted-round-robin pick()", algorithm: "weighted-round-robin", pick: "b.pick()" },
  { name: "weighted-round-robin pickAt(p)", algorithm: "weighted-round-robin", pick: "b.pickAt(offset + k)" },
  { name: "weighted-round-robin pick(, exclude)", algorithm: "weighted-round-robin", pick: "b.pick(undefined, targets[0])" },
  { name: "least-connections pick()", algorithm: "least-connections", pick: "b.pick()" },
  { name: "consistent-hash pick(key)", algorithm: "consistent-hash", pick: "b.pick(keys[(offset + k) & 4095])" },
  { name: "random pick()", algorithm: "random", pick: "b.pick()" },
  { name: "random pick(, exclude)", algorithm: "random", pick: "b.pick(undefined, targets[0])" },
];

let sink = 0; // results flow here so the JIT cannot drop the picks as dead code

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1];
}

const rows = [];
for (const c of cases) {
  const row = { case: c.name };
  for (const n of SIZES) {
    const targets = makeTargets(n);
    const buildStart = process.hrtime.bigint();
    const balancer = createBalancer(c.algorithm, targets);
    const buildMs = Number(process.hrtime.bigint() - buildStart) / 1e6;
    const loop = makeLoop(c.pick);
    sink += loop(balancer, WARMUP_PICKS, 0, hashKeys, targets);
    const samples = [];
    for (let r = 0; r < RUNS; r++) {
      const start = process.hrtime.bigint();
      sink += loop(balancer, PICKS_PER_RUN, (r + 1) * PICKS_PER_RUN, hashKeys, targets);
      samples.push(Number(process.hrtime.bigint() - start) / PICKS_PER_RUN);
    }
    row[`n=${n} ns/pick`] = median(samples).toFixed(1);
    row[`n=${n} build ms`] = c.name.startsWith("baseline") ? "-" : buildMs.toFixed(2);
  }
  rows.push(row);
}

console.log(`node ${process.version}, ${RUNS} runs × ${PICKS_PER_RUN} picks per cell (median), weights 1..10`);
console.table(rows);
if (sink === 0.5) console.log(sink); // keeps `sink` observable

// Benchmark (not a test): forward() against the simplest hand-written undici proxy, in one run.
//
//   npx tsc -p tsconfig.json && node test/bench/forward.mjs [seconds-per-run=5] [pairs=3]
//
// Processes: a target (100-byte responses), one proxy at a time (ours or the baseline), and the
// load generator in this process: 50 keep-alive connections, one request in flight on each,
// GET / on 127.0.0.1. `wrk` is not installed on these machines, so the load generator is a small
// undici client. On 2 cores, when `taskset` exists the proxy gets core 1 to itself and the target
// and load generator share core 0, so the generator competes with the target, not with the proxy;
// it can still be the bottleneck, which would push the req/s ratio towards 1. That is why the
// proxy's own CPU time per request (from process.cpuUsage in the proxy) is reported as well: it is
// the number that compares the two proxies whoever saturates first. Absolute numbers drift ±30%
// between runs here; quote the ratios. Runs alternate baseline/ours to spread drift evenly, and
// the whole run stops by itself (watchdog) and kills the processes it started, by PID.
import { spawn, execFileSync } from "node:child_process";
import http from "node:http";
import { fileURLToPath } from "node:url";
import { Pool } from "undici";

const here = fileURLToPath(import.meta.url);
const dist = new URL("../../dist/data-plane/src/proxy/", import.meta.url);
const role = process.argv[2];

function ready(server) {
  server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }));
  process.on("message", (m) => {
    if (m === "cpu") process.send({ cpu: process.cpuUsage() });
  });
  process.on("disconnect", () => process.exit(0));
  process.on("SIGINT", () => process.exit(0));
}

if (role === "target") {
  const body = Buffer.alloc(100, "x");
  ready(
    http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "text/plain", "content-length": "100" });
      res.end(body);
    }),
  );
} else if (role === "baseline") {
  // The simplest proxy one would write by hand with undici: request() and pipe. Requests without a
  // body send none (passing `req` on a GET would make undici send an empty chunked body).
  const origin = process.argv[3];
  const pool = new Pool(origin, { connections: 256, pipelining: 1 });
  ready(
    http.createServer(async (req, res) => {
      try {
        const { statusCode, headers, body } = await pool.request({
          path: req.url,
          method: req.method,
          headers: req.headers,
          body: req.method === "GET" || req.method === "HEAD" ? null : req,
        });
        res.writeHead(statusCode, headers);
        body.pipe(res);
      } catch {
        res.statusCode = 502;
        res.end();
      }
    }),
  );
} else if (role === "ours") {
  const origin = process.argv[3];
  const { forward, sendUpstreamError } = await import(new URL("forward.js", dist).href);
  const { PoolRegistry } = await import(new URL("pools.js", dist).href);
  const { requestIdOf } = await import(new URL("request-id.js", dist).href);
  const registry = new PoolRegistry();
  const target = { origin, basePath: "" };
  const pool = registry.get(origin, { connectTimeoutMs: 5_000 });
  ready(
    http.createServer((req, res) => {
      const requestId = requestIdOf(req);
      forward(req, res, target, req.url, {
        requestId,
        clientAddr: req.socket.remoteAddress,
        passHost: "pass",
        headersTimeoutMs: 30_000,
        bodyTimeoutMs: 30_000,
        pool,
      }).then((o) => {
        if (o.errorClass !== undefined && !o.responseStarted) sendUpstreamError(res, o, requestId);
      });
    }),
  );
} else {
  await main();
}

function hasTaskset() {
  try {
    execFileSync("taskset", ["-p", "-c", "0", String(process.pid)], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function start(args, cpu, children) {
  // BENCH_CPU_PROF=dir writes a V8 CPU profile of each proxy there, to see where time goes.
  const prof = process.env.BENCH_CPU_PROF && args[0] !== "target" ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const argv = [...prof, here, ...args];
  const child = cpu === undefined
    ? spawn(process.execPath, argv, { stdio: ["ignore", "inherit", "inherit", "ipc"] })
    : spawn("taskset", ["-c", String(cpu), process.execPath, ...argv], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  children.add(child);
  child.once("exit", () => children.delete(child));
  return new Promise((resolve, reject) => {
    child.once("message", (m) => resolve({ child, port: m.port }));
    child.once("exit", (code) => reject(new Error(`${args[0]} exited with ${code}`)));
  });
}

function cpuOf(child) {
  return new Promise((resolve) => {
    const onMessage = (m) => {
      if (m.cpu) {
        child.off("message", onMessage);
        resolve(m.cpu.user + m.cpu.system);
      }
    };
    child.on("message", onMessage);
    child.send("cpu");
  });
}

// 50 loops, one per connection, each a reused raw dispatch handler: the cheapest undici client.
async function load(port, seconds, warmupSeconds = 2) {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 50, pipelining: 1 });
  let counting = false;
  let running = true;
  let done = 0;
  let failed = 0;
  let bad = 0;
  const opts = { path: "/", method: "GET", headers: ["host", "bench.local"] };
  const loops = [];
  for (let i = 0; i < 50; i++) {
    loops.push(
      new Promise((finish) => {
        const handler = {
          onConnect() {},
          onHeaders(status) {
            if (status !== 200) bad++;
            return true;
          },
          onData() {
            return true;
          },
          onComplete() {
            if (counting) done++;
            next();
          },
          onError() {
            failed++;
            next();
          },
        };
        const next = () => (running ? pool.dispatch(opts, handler) : finish());
        next();
      }),
    );
  }
  await new Promise((r) => setTimeout(r, warmupSeconds * 1_000)); // warm-up: connections, JIT
  counting = true;
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, seconds * 1_000));
  counting = false;
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const counted = done;
  running = false;
  await Promise.all(loops);
  await pool.close();
  return { rps: counted / elapsed, requests: counted, elapsed, failed, bad };
}

async function main() {
  const seconds = Number(process.argv[2] ?? 5);
  const pairs = Number(process.argv[3] ?? 3);
  const children = new Set();
  const killAll = () => {
    for (const c of children) c.kill();
  };
  const watchdog = setTimeout(() => {
    console.error("bench: watchdog fired, stopping");
    killAll();
    process.exit(2);
  }, (seconds + 5) * 2 * pairs * 1_000 + 30_000);
  watchdog.unref();

  const pinned = hasTaskset(); // pins this process to core 0 when it succeeds
  const target = await start(["target"], pinned ? 0 : undefined, children);
  const origin = `http://127.0.0.1:${target.port}`;
  console.log(`target ${origin}; proxy on ${pinned ? "core 1, target + load generator on core 0" : "no CPU pinning (taskset missing)"}`);
  console.log(`load: 50 keep-alive connections, ${seconds}s per run after 2s warm-up, 100-byte responses\n`);

  // Warm the target and the load generator up first, so the first proxy measured is not penalised.
  await load(target.port, 1, 1);

  const results = { baseline: [], ours: [] };
  const order = [];
  for (let i = 0; i < pairs; i++) order.push("baseline", "ours");
  for (const kind of order) {
    const proxy = await start([kind, origin], pinned ? 1 : undefined, children);
    const cpu0 = await cpuOf(proxy.child);
    const r = await load(proxy.port, seconds);
    const cpu1 = await cpuOf(proxy.child);
    // CPU includes the warm-up seconds; requests are counted only in the window, so scale by time.
    r.cpuUsPerReq = ((cpu1 - cpu0) * (r.elapsed / (r.elapsed + 2))) / r.requests;
    results[kind].push(r);
    console.log(
      `${kind.padEnd(8)} ${Math.round(r.rps).toString().padStart(6)} req/s  ` +
        `${r.cpuUsPerReq.toFixed(1).padStart(6)} µs proxy CPU/req  (errors ${r.failed}, non-200 ${r.bad})`,
    );
    // SIGINT lets a --cpu-prof process write its profile on the way out.
    proxy.child.kill("SIGINT");
    await new Promise((r) => proxy.child.once("exit", r));
  }

  // Each baseline run is paired with the ours run right after it; the median of the pair ratios
  // resists the drift and the neighbours' load on this shared machine.
  const median = (xs) => {
    const v = [...xs].sort((a, b) => a - b);
    return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
  };
  const rps = results.ours.map((o, i) => o.rps / results.baseline[i].rps);
  const cpu = results.ours.map((o, i) => results.baseline[i].cpuUsPerReq / o.cpuUsPerReq);
  const fmt = (xs) => xs.map((x) => x.toFixed(2)).join(", ");
  console.log(`\nthroughput ours/baseline: ${median(rps).toFixed(2)}x median (pairs: ${fmt(rps)})`);
  console.log(`proxy CPU per request baseline/ours: ${median(cpu).toFixed(2)}x median (pairs: ${fmt(cpu)}; above 1 = ours cheaper)`);

  killAll();
  clearTimeout(watchdog);
}

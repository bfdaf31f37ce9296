// Benchmark (not a test): the FULL data plane (routing, split rules, passive + active health,
// retries policy, Prometheus metrics on) in its own process, against the minimal hand-written undici
// proxy of DESIGN.md's budget, forward() alone (test/bench/forward.mjs's "ours"), and nginx when
// `which nginx` finds it, all in one run so the ratios are comparable.
//
//   npm run build && node test/bench/proxy.mjs [seconds-per-run=5] [pairs=3] [connections=50,200]
//
// Processes: a target (100-byte responses), a real control plane (the data plane gets its
// configuration over the discovery stream, reports every 5 s and receives fleet health, as in
// production), and one proxy at a time. The load generator runs here: N keep-alive connections,
// one request in flight on each, GET /bench/x with a Host header. With `taskset`, the proxy gets
// core 1 to itself; target, control plane and load generator share core 0, so the generator may
// saturate first: that is why each proxy's CPU time per request (utime+stime from /proc, which
// needs no cooperation from the proxy) is reported too. It is the figure that compares proxies
// whoever saturates first.
//
// The data plane's configuration: 200 filler rules plus the benchmarked rule /bench/*, whose split
// sends X-Canary: true to a canary upstream and everything else 90/10 over two upstreams; every
// upstream has passive health (defaults), retries (defaults), and the main one an active HTTP check
// every second. The admin listener (/metrics) is on and scraped once per run, as Prometheus would.
// Access logging is off (its default).
//
// Rows: "direct" (no proxy: the load generator on the target; CPU is the target's), "baseline" (the minimal undici proxy), "forward" (forward() alone, test/bench/forward.mjs),
// "gateway" (the full data plane on the split rule /bench/*), "gw-plain" (the same data plane on
// /plain/*, a rule without split rules: the difference is what split matching costs), "nginx".
// BENCH_KINDS=gateway,nginx runs a subset (the baseline always runs); BENCH_CPU_PROF=dir profiles
// the data planes.
//
// Latency is measured by the load generator per request (p50, p99 of the timed window). Runs
// alternate kinds so drift is spread evenly; ratios are medians of per-round ratios. The whole run
// stops itself (watchdog) and ends every process it started, by PID.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { Pool, request } from "undici";

const here = fileURLToPath(import.meta.url);
const repo = path.resolve(path.dirname(here), "../..");
const gatewayBin = path.join(repo, "dist/control-plane/src/cli/gateway.js");
const forwardBench = path.join(repo, "test/bench/forward.mjs");
const role = process.argv[2];

// ---- processes ----

const children = new Set();

function hasTaskset() {
  try {
    execFileSync("taskset", ["-p", "-c", "0", String(process.pid)], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function spawnPinned(cpu, argv, opts) {
  const child = cpu === undefined ? spawn(argv[0], argv.slice(1), opts) : spawn("taskset", ["-c", String(cpu), ...argv], opts);
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** A helper process of this script (target, baseline) or forward.mjs's "ours"; resolves with its port. */
function startIpc(script, args, cpu) {
  const child = spawnPinned(cpu, [process.execPath, script, ...args], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  return new Promise((resolve, reject) => {
    child.once("message", (m) => resolve({ child, port: m.port }));
    child.once("exit", (code) => reject(new Error(`${args[0]} exited with ${code}`)));
  });
}

/** `gateway <args>`; resolves with the child and a waiter on its JSON log lines. */
function startGateway(args, cpu) {
  // BENCH_CPU_PROF=dir writes a V8 CPU profile of each data plane there, to see where time goes.
  const prof = process.env.BENCH_CPU_PROF && args[0] === "data-plane" ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const child = spawnPinned(cpu, [process.execPath, ...prof, gatewayBin, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  const records = [];
  const waiters = new Set();
  readline.createInterface({ input: child.stdout }).on("line", (line) => {
    if (!line.startsWith("{")) return;
    try {
      records.push(JSON.parse(line));
    } catch {
      return;
    }
    for (const w of [...waiters]) w();
  });
  const waitFor = (pred, what, ms = 20_000) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const r = records.find(pred);
        if (r === undefined) return;
        waiters.delete(check);
        clearTimeout(t);
        resolve(r);
      };
      const t = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}`));
      }, ms);
      waiters.add(check);
      check();
    });
  return { child, records, waitFor };
}

function stopChild(child, signal = "SIGTERM") {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise((r) => child.once("exit", r));
  child.kill(signal);
  const force = setTimeout(() => child.kill("SIGKILL"), 5_000);
  return exited.finally(() => clearTimeout(force));
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU time (µs) a process has used, from /proc (no cooperation needed from the process). */
function cpuMicros(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) / CLK_TCK) * 1e6;
}

// ---- control plane and configuration ----

async function api(base, method, p, key, body) {
  const res = await request(`${base}${p}`, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  if (res.statusCode >= 300) throw new Error(`${method} ${p}: ${res.statusCode} ${text}`);
  return text === "" ? undefined : JSON.parse(text);
}

async function configure(cpUrl, adminKey, targetPort) {
  const tenant = await api(cpUrl, "POST", "/api/v1/tenants", adminKey, { name: "bench" });
  const key = tenant.api_key;
  const t = (p) => `/api/v1/tenants/${tenant.id}${p}`;
  const target = [{ host: "127.0.0.1", port: targetPort }];
  const main = await api(cpUrl, "POST", t("/upstreams"), key, {
    name: "main",
    targets: target,
    health_check: { active: { path: "/", interval_ms: 1_000, timeout_ms: 500 } },
  });
  const side = await api(cpUrl, "POST", t("/upstreams"), key, { name: "side", targets: target });
  const canary = await api(cpUrl, "POST", t("/upstreams"), key, { name: "canary", targets: target });
  // The same data plane also serves /plain/*: one upstream, no split rules (the "gw-plain" rows).
  const plain = await api(cpUrl, "POST", t("/upstreams"), key, { name: "plain", targets: target });
  await api(cpUrl, "POST", t("/rules"), key, { path: "/plain/*", upstream_id: plain.id, methods: ["GET"], strip_path: true });
  for (let i = 0; i < 200; i++) {
    await api(cpUrl, "POST", t("/rules"), key, { path: `/filler${i}/*`, targets: [{ url: `http://127.0.0.1:${targetPort}` }] });
  }
  const rule = await api(cpUrl, "POST", t("/rules"), key, {
    path: "/bench/*",
    upstream_id: main.id,
    methods: ["GET"],
    strip_path: true,
    traffic_split: {
      rules: [
        { match: [{ vars: [["http_x_canary", "==", "true"]] }], weighted_upstreams: [{ upstream_id: canary.id, weight: 100 }] },
        { weighted_upstreams: [{ weight: 90 }, { upstream_id: side.id, weight: 10 }] },
      ],
    },
  });
  return BigInt(rule.revision);
}

async function startFullDataPlane(cp, version, cpu, n) {
  const dp = startGateway(
    [
      "data-plane",
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "127.0.0.1:0",
      "--control-plane",
      cp.url,
      "--token",
      cp.nodeToken,
      "--node-id",
      `bench-dp-${n}`,
      "--drain-ms",
      "1000",
    ],
    cpu,
  );
  const listening = await dp.waitFor((r) => r.msg === "data plane listening", "the data plane to listen");
  const metrics = await dp.waitFor((r) => r.msg === "metrics listening", "the metrics listener");
  await dp.waitFor((r) => r.msg === "applied snapshot" && BigInt(r.version) >= version, "the configuration");
  return { child: dp.child, port: Number(new URL(listening.url).port), metricsUrl: metrics.url };
}

// ---- load ----

// One loop per connection, each a reused raw dispatch handler (the cheapest undici client),
// timing every request of the measured window.
async function load(port, seconds, connections, warmupSeconds = 2, path = "/bench/x") {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections, pipelining: 1 });
  let counting = false;
  let running = true;
  let done = 0;
  let failed = 0;
  let bad = 0;
  const latencies = new Float64Array(4_000_000);
  const opts = { path, method: "GET", headers: ["host", "bench.local"] };
  const loops = [];
  for (let i = 0; i < connections; i++) {
    loops.push(
      new Promise((finish) => {
        let start = 0n;
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
            if (counting) {
              if (done < latencies.length) latencies[done] = Number(process.hrtime.bigint() - start) / 1e6;
              done++;
            }
            next();
          },
          onError() {
            failed++;
            next();
          },
        };
        const next = () => {
          if (!running) return finish();
          start = process.hrtime.bigint();
          pool.dispatch(opts, handler);
        };
        next();
      }),
    );
  }
  await new Promise((r) => setTimeout(r, warmupSeconds * 1_000));
  counting = true;
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, seconds * 1_000));
  counting = false;
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const counted = done;
  running = false;
  await Promise.all(loops);
  await pool.close();
  const sorted = latencies.slice(0, Math.min(counted, latencies.length)).sort();
  const q = (p) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]);
  return { rps: counted / elapsed, requests: counted, elapsed, failed, bad, p50: q(0.5), p99: q(0.99) };
}

// ---- nginx (when installed) ----

async function startNginx(targetPort, cpu, parent) {
  const dir = mkdtempSync(path.join(parent, "nginx-"));
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const conf = path.join(dir, "nginx.conf");
  // One process (no master): its CPU time is all of nginx's, read like the others'.
  const text = `master_process off; worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 4096; }
http { access_log off; upstream t { server 127.0.0.1:${targetPort}; keepalive 256; }
  server { listen 127.0.0.1:${port}; location / { proxy_pass http://t; proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n`;
  execFileSync("sh", ["-c", `cat > ${conf}`], { input: text });
  const child = spawnPinned(cpu, ["nginx", "-c", conf, "-p", dir], { stdio: "ignore" });
  // Ready when it answers (a port taken by someone else makes it exit: try another).
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) return startNginx(targetPort, cpu, parent);
    const ok = await request(`http://127.0.0.1:${port}/`).then((r) => r.body.dump().then(() => true), () => false);
    if (ok) return { child, port };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nginx did not start (see ${dir}/error.log)`);
}

// ---- main ----

async function main() {
  const seconds = Number(process.argv[2] ?? 5);
  const pairs = Number(process.argv[3] ?? 3);
  const connectionSets = (process.argv[4] ?? "50,200").split(",").map(Number);
  let nginx = false;
  try {
    execFileSync("which", ["nginx"], { stdio: "ignore" });
    nginx = true;
  } catch {
    nginx = false;
  }
  // BENCH_KINDS=baseline,gateway runs only those (the baseline is always run: ratios need it).
  const only = process.env.BENCH_KINDS?.split(",");
  // "direct": the load generator on the target itself, no proxy (the ceiling; its CPU column is the target's).
  const kinds = ["direct", "baseline", "forward", "gateway", "gw-plain", ...(nginx ? ["nginx"] : [])].filter((k) => k === "baseline" || only === undefined || only.includes(k));
  const perRun = seconds + 2 + 3;
  const watchdog = setTimeout(
    () => {
      console.error("bench: watchdog fired, stopping");
      for (const c of children) c.kill("SIGKILL");
      process.exit(2);
    },
    (perRun * kinds.length * pairs * connectionSets.length + 120) * 1_000,
  );
  watchdog.unref();

  const dir = mkdtempSync(path.join(os.tmpdir(), "gateway-bench-"));
  const pinned = hasTaskset();
  const shared = pinned ? 0 : undefined;
  const proxyCpu = pinned ? 1 : undefined;
  try {
    const target = await startIpc(here, ["target"], shared);
    const origin = `http://127.0.0.1:${target.port}`;
    const adminKey = "adm_bench";
    const nodeToken = "nt_bench";
    const cpProc = startGateway(["control-plane", "--listen", "127.0.0.1:0", "--data-dir", dir, "--admin-key", adminKey, "--node-token", nodeToken], shared);
    const cpLine = await cpProc.waitFor((r) => r.msg === "control plane listening", "the control plane");
    const cp = { url: cpLine.url, nodeToken };
    const version = await configure(cp.url, adminKey, target.port);
    console.log(`target ${origin}; proxy on ${pinned ? "core 1; target, control plane and load generator on core 0" : "no CPU pinning (taskset missing)"}`);
    console.log(`${seconds}s per run after 2s warm-up, 100-byte responses, ${pairs} rounds; nginx ${nginx ? "found" : "not installed"}\n`);
    await load(target.port, 1, 50, 1).catch(() => undefined); // warm the target and generator up

    const results = {};
    let n = 0;
    for (const connections of connectionSets) {
      results[connections] = Object.fromEntries(kinds.map((k) => [k, []]));
      for (let round = 0; round < pairs; round++) {
        for (const kind of kinds) {
          let proxy;
          if (kind === "direct") proxy = target;
          else if (kind === "baseline") proxy = await startIpc(here, ["baseline", origin], proxyCpu);
          else if (kind === "forward") proxy = await startIpc(forwardBench, ["ours", origin], proxyCpu);
          else if (kind === "nginx") proxy = await startNginx(target.port, proxyCpu, dir);
          else proxy = await startFullDataPlane(cp, version, proxyCpu, n++);
          const loadPath = kind === "gw-plain" ? "/plain/x" : "/bench/x";
          const cpu0 = cpuMicros(proxy.child.pid);
          const scrape = proxy.metricsUrl === undefined ? undefined : setTimeout(() => void request(`${proxy.metricsUrl}/metrics`).then((r) => r.body.text()), 3_000);
          const r = await load(proxy.port, seconds, connections, 2, loadPath);
          clearTimeout(scrape);
          const cpu1 = cpuMicros(proxy.child.pid);
          // CPU includes the warm-up; requests are counted in the window only: scale by time.
          r.cpuUsPerReq = ((cpu1 - cpu0) * (r.elapsed / (r.elapsed + 2))) / r.requests;
          results[connections][kind].push(r);
          console.log(
            `c=${String(connections).padEnd(3)} ${kind.padEnd(8)} ${Math.round(r.rps).toString().padStart(6)} req/s  ` +
              `p50 ${r.p50.toFixed(2).padStart(6)} ms  p99 ${r.p99.toFixed(2).padStart(7)} ms  ` +
              `${r.cpuUsPerReq.toFixed(1).padStart(6)} µs CPU/req  (errors ${r.failed}, non-200 ${r.bad})`,
          );
          if (kind !== "direct") await stopChild(proxy.child, kind.startsWith("g") ? "SIGTERM" : "SIGINT");
        }
      }
    }

    const median = (xs) => {
      const v = [...xs].sort((a, b) => a - b);
      return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    };
    console.log("\nMedians over rounds; ratios are medians of per-round ratios against the baseline of the same round.");
    console.log("| connections | proxy | req/s | p50 ms | p99 ms | CPU µs/req | req/s vs baseline | CPU/req baseline÷proxy |");
    console.log("|---|---|---|---|---|---|---|---|");
    for (const connections of connectionSets) {
      const base = results[connections].baseline;
      for (const kind of kinds) {
        const rs = results[connections][kind];
        const rpsRatio = median(rs.map((r, i) => r.rps / base[i].rps));
        const cpuRatio = median(rs.map((r, i) => base[i].cpuUsPerReq / r.cpuUsPerReq));
        console.log(
          `| ${connections} | ${kind} | ${Math.round(median(rs.map((r) => r.rps)))} | ${median(rs.map((r) => r.p50)).toFixed(2)} | ` +
            `${median(rs.map((r) => r.p99)).toFixed(2)} | ${median(rs.map((r) => r.cpuUsPerReq)).toFixed(1)} | ${rpsRatio.toFixed(2)}x | ${cpuRatio.toFixed(2)}x |`,
        );
      }
    }
    if (!nginx) {
      console.log("\nnginx is not installed here: DESIGN.md puts the minimal undici baseline at ≈0.28× nginx on one core,");
      console.log("so gateway/baseline × 0.28 estimates the gateway's ratio to nginx.");
    }
  } finally {
    await Promise.all([...children].map((c) => stopChild(c)));
    rmSync(dir, { recursive: true, force: true });
    clearTimeout(watchdog);
  }
}

// ---- entry point (last, so every module-level binding above is initialised) ----

function ready(server) {
  server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }));
  process.on("disconnect", () => process.exit(0));
  process.on("SIGINT", () => process.exit(0));
  process.on("SIGTERM", () => process.exit(0));
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
  // DESIGN.md's "minimal hand-written undici proxy": request() and pipe.
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
} else {
  await main();
}

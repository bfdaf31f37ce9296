// Fan-out of configuration pushes from one control plane to a fleet of data planes.
//
// A benchmark, not a test: it asserts nothing, it measures (DESIGN.md budget: "10,000 connected
// data planes on one process; a change acked by all of them in under 2 s (p99); pushes of a
// one-target change cost bytes proportional to the change"; issue 7: "memory under 20 KB per idle
// node"). Run against the compiled output:
//
//   npm run build && node test/bench/fanout.mjs                       # N=10,000, R=10 and R=10,000
//   node test/bench/fanout.mjs --nodes 2000 --rules 10 --changes 3    # smaller, quicker
//
// Per scenario (R rules and one upstream of three targets) it starts a real control plane as a
// child process on 127.0.0.1 and a fleet of simulated data planes in a few forked workers
// (fanout-worker.mjs: the generated client over real HTTP/2, streams multiplexed per connection),
// then measures:
//   - initial sync: every node's time from opening its stream to receiving the full snapshot;
//   - control-plane RSS before the fleet connects and with the fleet connected and idle, per node;
//   - M incremental changes (one target's weight changed through REST PUT): per node, the
//     time from the write's response to the push's arrival (nodes ACK on arrival), whether every
//     node got it, the control plane's CPU for the push (utime+stime over the push, minus its idle
//     rate; also what the same change costs it before any node is connected, so the part that
//     grows with the fleet shows), the simulated fleet's own CPU (it shares the cores: on a 2-core
//     machine it, not the control plane, sets the latency), and whether the control plane
//     recorded every ACK (GET /api/v1/nodes afterwards);
//   - bytes per push per node (encoded StreamResponse), full and delta;
//   - the cost of reports: control-plane CPU and RSS over a window with every node reporting every
//     ~reportMs (jittered), against the same window idle.
// Rules beyond --rest-rules are written straight into the stopped control plane's file store
// (REST validates the whole configuration on every write: a quarter of an hour for 10,000 rules).
// With R=10,000 only --full-sync-large nodes (default 200) start from nothing; the others say in
// Hello that they already serve the current version (a restart with a snapshot cache), because
// decoding 10,000 copies of a ~1 MB snapshot would measure this machine's two cores, not the
// control plane. Pass --full-sync-large all to sync the whole fleet from nothing.
//
// Everything listens on 127.0.0.1, every wait is bounded, --max-seconds bounds the whole run, and
// only this script's own children are killed, by pid. Numbers are noisy on shared machines:
// run it more than once and compare ratios within a run.

import { spawn, fork } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");

// ---- arguments ----------------------------------------------------------------------------

const DEFAULTS = {
  nodes: "10000",
  rules: "10,10000",
  workers: "2",
  "streams-per-conn": "200",
  changes: "5",
  "report-ms": "5000",
  "window-ms": "10000",
  "full-sync-large": "200",
  "connect-rate": "0",
  "large-rules": "1000",
  "rest-rules": "200",
  dist: path.join(repo, "dist"),
  "log-level": "info",
  "cp-node-args": "",
  "max-seconds": "1500",
  json: "",
};
const HELP = `Usage: node test/bench/fanout.mjs [--flag value ...]
  --nodes N               simulated data planes (default ${DEFAULTS.nodes})
  --rules R[,R...]        scenarios: number of rules (default ${DEFAULTS.rules})
  --workers W             forked client processes (default ${DEFAULTS.workers})
  --streams-per-conn S    discovery streams per HTTP/2 connection (default ${DEFAULTS["streams-per-conn"]})
  --changes M             incremental changes per scenario (default ${DEFAULTS.changes})
  --report-ms MS          report interval of each node, jittered ±20%; 0 skips the reports phase (default ${DEFAULTS["report-ms"]})
  --window-ms MS          length of the idle and the reporting measurement windows (default ${DEFAULTS["window-ms"]})
  --connect-rate R        streams opened per second across the fleet; 0: as fast as the workers can (default 0)
  --full-sync-large K|all nodes that sync from nothing when R >= --large-rules (default ${DEFAULTS["full-sync-large"]})
  --large-rules R         from how many rules a scenario counts as large (default ${DEFAULTS["large-rules"]})
  --rest-rules K          rules created through REST; the rest are copies of one of them written into the
                          file store while the control plane is stopped (default ${DEFAULTS["rest-rules"]})
  --dist DIR              compiled output to run (default ./dist)
  --log-level L           control plane's --log-level (default ${DEFAULTS["log-level"]})
  --cp-node-args "ARGS"   extra node flags for the control plane, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"
  --max-seconds S         hard bound on the whole run (default ${DEFAULTS["max-seconds"]})
  --json FILE             also write the results as JSON
`;

function parseArgs(argv) {
  const out = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--help" || a === "-h") {
      process.stdout.write(HELP);
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (m === null || !(m[1] in DEFAULTS)) throw new Error(`unknown argument ${a}\n${HELP}`);
    out[m[1]] = m[2] ?? argv[++i];
    if (out[m[1]] === undefined) throw new Error(`--${m[1]} needs a value`);
  }
  const int = (k) => {
    const n = Number(out[k]);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${k}: must be a non-negative integer, got "${out[k]}"`);
    return n;
  };
  return {
    nodes: int("nodes"),
    rules: out.rules.split(",").map((r) => {
      const n = Number(r);
      if (!Number.isInteger(n) || n < 1) throw new Error(`--rules: "${r}" is not a positive integer`);
      return n;
    }),
    workers: Math.max(1, int("workers")),
    streamsPerConn: Math.max(1, int("streams-per-conn")),
    changes: int("changes"),
    reportMs: int("report-ms") === 0 ? 0 : Math.max(100, int("report-ms")),
    windowMs: Math.max(1000, int("window-ms")),
    fullSyncLarge: out["full-sync-large"] === "all" ? Infinity : int("full-sync-large"),
    connectRate: int("connect-rate"),
    largeRules: int("large-rules"),
    restRules: Math.max(2, int("rest-rules")),
    dist: path.resolve(out.dist),
    logLevel: out["log-level"],
    cpNodeArgs: out["cp-node-args"].split(" ").filter((s) => s !== ""),
    maxSeconds: int("max-seconds"),
    json: out.json,
  };
}

const opts = parseArgs(process.argv.slice(2));

// ---- helpers ------------------------------------------------------------------------------

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const CLK_TCK = 100; // Linux USER_HZ

/** CPU seconds (user + system) consumed so far by a process. */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14, 15)
}

/** Resident set size in KB. */
function rssKb(pid) {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m === null ? NaN : Number(m[1]);
}

function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function summary(values) {
  const s = Float64Array.from(values).sort();
  return { n: s.length, p50: quantile(s, 0.5), p99: quantile(s, 0.99), max: s.length === 0 ? NaN : s[s.length - 1] };
}

const ms = (x) => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toFixed(1)) : "-");
const kb = (bytes) => (bytes >= 10240 ? `${(bytes / 1024).toFixed(0)} KB` : `${bytes} B`);

// ---- children (killed by pid on every exit path) --------------------------------------------

const children = new Set();
function track(child) {
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}
function killChildren() {
  for (const c of children) {
    try {
      process.kill(c.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}
/** Data directories of control planes still to remove, also when the run dies early. */
const dataDirs = new Set();
process.on("exit", () => {
  killChildren();
  for (const d of dataDirs) rmSync(d, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    killChildren();
    process.exit(130);
  });
}
const hardStop = setTimeout(() => {
  process.stderr.write(`fanout: still running after --max-seconds ${opts.maxSeconds}; stopping\n`);
  killChildren();
  process.exit(2);
}, opts.maxSeconds * 1000);
hardStop.unref();

// ---- control plane ------------------------------------------------------------------------

const ADMIN_KEY = "adm_fanout_bench_key_0123456789";
const NODE_TOKEN = "nt_fanout_bench_token_0123456789";

async function startControlPlane(existingDir) {
  const dataDir = existingDir ?? (await mkdtemp(path.join(os.tmpdir(), "fanout-cp-")));
  dataDirs.add(dataDir);
  const gateway = path.join(opts.dist, "control-plane/src/cli/gateway.js");
  const args = [
    ...opts.cpNodeArgs,
    gateway,
    "control-plane",
    "--listen",
    "127.0.0.1:0",
    "--data-dir",
    dataDir,
    "--admin-key",
    ADMIN_KEY,
    "--node-token",
    NODE_TOKEN,
    "--log-level",
    opts.logLevel,
  ];
  // ulimit -n is per process and node cannot raise its own: raise it in the shell, then exec node
  // (same pid, so /proc/<pid> is the control plane's).
  const child = track(
    spawn("bash", ["-c", 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec node "$@"', "bash", ...args], {
      cwd: repo,
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  const logs = [];
  let url;
  let stdoutBuf = "";
  const listening = new Promise((resolve, reject) => {
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      stdoutBuf += chunk;
      let nl;
      while ((nl = stdoutBuf.indexOf("\n")) !== -1) {
        const line = stdoutBuf.slice(0, nl);
        stdoutBuf = stdoutBuf.slice(nl + 1);
        if (url === undefined && line.includes('"control plane listening"')) {
          try {
            url = JSON.parse(line).url;
            resolve(url);
          } catch {
            // not JSON after all; keep reading
          }
        } else if (/"level":(40|50|60)/.test(line) && logs.length < 50) {
          logs.push(line);
        }
      }
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d) => logs.length < 50 && logs.push(d.trimEnd()));
    child.on("exit", (code, sig) => reject(new Error(`control plane exited (${code ?? sig}) before listening:\n${logs.join("\n")}`)));
    setTimeout(() => reject(new Error("control plane did not listen within 30 s (is --log-level at least info?)")), 30_000);
  });
  await listening;
  return {
    pid: child.pid,
    url,
    logs,
    dataDir,
    /** Stops the process, keeping its data directory. */
    async halt() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      process.kill(child.pid, "SIGTERM");
      const t = setTimeout(() => process.kill(child.pid, "SIGKILL"), 15_000);
      await exited;
      clearTimeout(t);
    },
    async stop() {
      const exited = new Promise((r) => child.once("exit", r));
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid, "SIGTERM");
        const t = setTimeout(() => process.kill(child.pid, "SIGKILL"), 15_000);
        await exited;
        clearTimeout(t);
      }
      await rm(dataDir, { recursive: true, force: true });
      dataDirs.delete(dataDir);
    },
  };
}

async function call(base, method, urlPath, key, body) {
  const res = await fetch(`${base}${urlPath}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`${method} ${urlPath}: ${res.status} ${text.slice(0, 300)}`);
  return text === "" ? undefined : JSON.parse(text);
}

/**
 * R rules and one upstream of three targets; rule 0 routes to the upstream. Up to --rest-rules go
 * through REST; beyond that, every REST write validates the whole configuration (seconds per write
 * at 10,000 rules, a quarter of an hour in all), which is not what this benchmark measures: the
 * control plane is stopped, the other rules are written into its file store as copies of a rule
 * REST accepted (new id and path), and it is started again on the same directory.
 */
async function createConfig(cp, rules) {
  const tenant = await call(cp.url, "POST", "/api/v1/tenants", ADMIN_KEY, { name: "fanout" });
  const targets = [9001, 9002, 9003].map((port) => ({ host: "127.0.0.1", port, weight: 1 }));
  const upstream = await call(cp.url, "POST", `/api/v1/tenants/${tenant.id}/upstreams`, tenant.api_key, {
    name: "fanout-backend",
    algorithm: "round-robin",
    targets,
  });
  let next = 0;
  const t0 = now();
  const writer = async () => {
    for (;;) {
      const i = next++;
      if (i >= viaRest) return;
      const body =
        i === 0
          ? { path: "/svc/0/*", upstream_id: upstream.id }
          : { path: `/svc/${i}/*`, methods: ["GET", "POST"], targets: [{ url: `http://127.0.0.1:${10000 + (i % 5000)}` }] };
      await call(cp.url, "POST", `/api/v1/tenants/${tenant.id}/rules`, tenant.api_key, body);
    }
  };
  const viaRest = Math.min(rules, opts.restRules);
  await Promise.all(Array.from({ length: Math.min(32, viaRest) }, writer));
  if (rules > viaRest) {
    await cp.halt();
    const { FileStore } = await import(pathToFileURL(path.join(opts.dist, "control-plane/src/store/file.js")).href);
    const store = await FileStore.open(cp.dataDir);
    try {
      const state = await store.load();
      const template = [...state.resources.values()].find((r) => r.kind === "rule" && JSON.parse(r.data).path === "/svc/1/*");
      if (template === undefined) throw new Error("seeding: the REST-created template rule is not in the store");
      const mutations = [];
      for (let i = viaRest; i < rules; i++) {
        const rule = JSON.parse(template.data);
        rule.id = `rule_seed${i}`;
        rule.path = `/svc/${i}/*`;
        rule.targets = [{ url: `http://127.0.0.1:${10000 + (i % 5000)}` }];
        mutations.push({ op: "put", kind: "rule", id: rule.id, data: JSON.stringify(rule) });
      }
      await store.commit(state.version, mutations);
    } finally {
      await store.close();
    }
    cp.restart = await startControlPlane(cp.dataDir);
  }
  const setupMs = now() - t0;
  return { tenant, upstream, setupMs, viaRest };
}

/**
 * Returns a function that changes one target of the upstream (its weight, so the address the
 * simulated nodes report on stays valid); resolves to the new version.
 */
function changer(cp, cfg) {
  const { warnings: _w, ...upstream } = cfg.upstream;
  let revision = upstream.revision;
  let n = 0;
  return async () => {
    n++;
    const targets = upstream.targets.map((t, i) => (i === 0 ? { ...t, weight: 2 + (n % 50) } : t));
    const out = await call(cp.url, "PUT", `/api/v1/tenants/${cfg.tenant.id}/upstreams/${upstream.id}`, cfg.tenant.api_key, { ...upstream, targets, revision });
    revision = out.revision;
    return Number(out.revision);
  };
}

async function currentVersion(cp) {
  // ListNodes carries the version; with the fleet connected it is big, so only used before.
  const r = await call(cp.url, "GET", "/api/v1/nodes", ADMIN_KEY);
  return BigInt(r.version);
}

// ---- workers -----------------------------------------------------------------------------

function startWorkers(cp, scenario) {
  const per = Math.ceil(opts.nodes / opts.workers);
  const workers = [];
  for (let w = 0; w < opts.workers; w++) {
    const first = w * per;
    const last = Math.min(opts.nodes, first + per);
    if (first >= last) break;
    const child = track(
      fork(
        path.join(here, "fanout-worker.mjs"),
        [
          JSON.stringify({
            url: cp.url,
            token: NODE_TOKEN,
            dist: opts.dist,
            prefix: `r${scenario.rules}`,
            first,
            last,
            total: opts.nodes,
            streamsPerConn: opts.streamsPerConn,
            connectRate: opts.connectRate,
            workers: opts.workers,
            reportMs: opts.reportMs,
            upstreamId: scenario.upstream.id,
            targets: scenario.upstream.targets.map((t) => `${t.host}:${t.port}`),
          }),
        ],
        { stdio: ["ignore", "inherit", "inherit", "ipc"], execArgv: ["--max-old-space-size=8192"] },
      ),
    );
    // A worker that died is reported by expect(); a send to it must not throw on its own.
    child.on("error", () => undefined);
    const inbox = [];
    const waiters = [];
    child.on("message", (m) => {
      const i = waiters.findIndex((w) => w.type === m.type);
      if (i !== -1) waiters.splice(i, 1)[0].resolve(m);
      else inbox.push(m);
    });
    const exit = new Promise((r) => child.once("exit", (code) => r(code)));
    workers.push({
      child,
      first,
      last,
      send: (m) => child.connected && child.send(m),
      /** Next message of `type`, bounded by `timeoutMs`. */
      expect(type, timeoutMs) {
        const i = inbox.findIndex((m) => m.type === type);
        if (i !== -1) return Promise.resolve(inbox.splice(i, 1)[0]);
        return new Promise((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`worker ${first}-${last}: no "${type}" within ${timeoutMs} ms`)), timeoutMs);
          waiters.push({ type, resolve: (m) => (clearTimeout(t), resolve(m)) });
          exit.then((code) => reject(new Error(`worker ${first}-${last} exited (${code}) while waiting for "${type}"`)));
        });
      },
      exit,
    });
  }
  return workers;
}

const ask = (workers, msg, reply, timeoutMs) => {
  for (const w of workers) w.send(msg);
  return Promise.all(workers.map((w) => w.expect(reply, timeoutMs)));
};

// ---- one scenario --------------------------------------------------------------------------

async function runScenario(rules) {
  const large = rules >= opts.largeRules;
  const fullSyncNodes = Math.min(opts.nodes, large ? opts.fullSyncLarge : Infinity);
  const res = { rules, nodes: opts.nodes, fullSyncNodes };
  log(`\n== R=${rules}, N=${opts.nodes} (${fullSyncNodes} sync from nothing) ==`);
  let cp = await startControlPlane();
  let workers = [];
  try {
    const cfg = await createConfig(cp, rules);
    if (cp.restart !== undefined) cp = cp.restart;
    res.setupMs = cfg.setupMs;
    log(
      `config: ${rules} rules + 1 upstream in ${(cfg.setupMs / 1000).toFixed(1)} s` +
        (cfg.viaRest < rules ? ` (${cfg.viaRest} through REST, ${rules - cfg.viaRest} seeded into the store)` : ""),
    );
    // What a change costs the control plane with no data plane connected (the write, validation,
    // publication): the part of "CPU per push" that does not grow with the fleet.
    const change = changer(cp, cfg);
    const fixed = [];
    for (let m = 0; m < 3; m++) {
      await sleep(300);
      const cpu0 = cpuSeconds(cp.pid);
      await change();
      await sleep(300);
      fixed.push((cpuSeconds(cp.pid) - cpu0) * 1000);
    }
    res.fixedCpuMs = median(fixed);
    await sleep(1500);
    const version = await currentVersion(cp);
    res.rssBaseKb = rssKb(cp.pid);
    log(`a change with no data plane connected: CP CPU ${ms(res.fixedCpuMs)} ms (median of 3); now at version ${version}`);

    // -- initial sync --
    workers = startWorkers(cp, { rules, upstream: cfg.upstream });
    await Promise.all(workers.map((w) => w.expect("ready", 30_000)));
    const cpuSync0 = cpuSeconds(cp.pid);
    const tSync = now();
    const synced = await ask(workers, { type: "start", fullSyncNodes, warmVersion: String(version), timeoutMs: 300_000 }, "synced", 330_000);
    const lat = synced.flatMap((s) => s.lat);
    const last = Math.max(...synced.map((s) => s.lastAt));
    res.sync = {
      ...summary(lat),
      expected: synced.reduce((a, s) => a + s.expected, 0),
      got: synced.reduce((a, s) => a + s.got, 0),
      wallMs: last > 0 ? last - tSync : NaN,
      reconnects: synced.reduce((a, s) => a + s.reconnects, 0),
      cpuS: cpuSeconds(cp.pid) - cpuSync0,
      snapshotBytes: Math.max(...synced.map((s) => s.snapshotBytes)),
      errors: synced.reduce((a, s) => a + s.errors, 0),
      lastError: synced.map((s) => s.lastError).find((e) => e !== "") ?? "",
    };
    log(
      `initial sync: ${res.sync.got}/${res.sync.expected} nodes got the full snapshot (${kb(res.sync.snapshotBytes)}); ` +
        `since each node's connect p50 ${ms(res.sync.p50)} ms, p99 ${ms(res.sync.p99)} ms, max ${ms(res.sync.max)} ms; ` +
        `all within ${ms(res.sync.wallMs)} ms of the start; CP CPU ${res.sync.cpuS.toFixed(2)} s` +
        (res.sync.errors > 0 ? `; ${res.sync.errors} stream errors, ${res.sync.reconnects} reconnects (${res.sync.lastError})` : ""),
    );

    // -- idle fleet: memory and CPU --
    await sleep(3000);
    const idle0 = { cpu: cpuSeconds(cp.pid), t: now() };
    await sleep(opts.windowMs);
    res.idleCpuPct = ((cpuSeconds(cp.pid) - idle0.cpu) / ((now() - idle0.t) / 1000)) * 100;
    res.rssIdleKb = rssKb(cp.pid);
    res.kbPerIdleNode = (res.rssIdleKb - res.rssBaseKb) / opts.nodes;
    log(
      `idle: RSS ${(res.rssBaseKb / 1024).toFixed(0)} MB before the fleet, ${(res.rssIdleKb / 1024).toFixed(0)} MB with ${opts.nodes} idle nodes ` +
        `→ ${res.kbPerIdleNode.toFixed(1)} KB per node; CPU ${res.idleCpuPct.toFixed(1)}% of a core`,
    );

    // -- ListNodes at fleet size --
    {
      const t0 = now();
      const cpu0 = cpuSeconds(cp.pid);
      const list = await call(cp.url, "GET", "/api/v1/nodes", ADMIN_KEY);
      res.listNodes = { ms: now() - t0, cpuMs: (cpuSeconds(cp.pid) - cpu0) * 1000, nodes: list.nodes.length, connected: list.nodes.filter((n) => n.connected).length };
      log(`GET /api/v1/nodes: ${list.nodes.length} nodes (${res.listNodes.connected} connected) in ${ms(res.listNodes.ms)} ms`);
    }

    // -- incremental changes --
    res.changes = [];
    const idleRate = res.idleCpuPct / 100; // CPU seconds per second when nothing happens
    for (let m = 1; m <= opts.changes; m++) {
      await sleep(1000);
      const cpu0 = cpuSeconds(cp.pid);
      const fleetCpu0 = workers.reduce((a, w) => a + cpuSeconds(w.child.pid), 0);
      const tReq = now();
      const v = await change();
      const tRes = now();
      const got = await ask(workers, { type: "await", version: v, timeoutMs: 60_000 }, "got", 70_000);
      const tAll = Math.max(...got.flatMap((g) => g.times.filter((t) => Number.isFinite(t))));
      // The ACKs travel back right after the last push; give the control plane a moment to read them.
      await sleep(250);
      const tEnd = now();
      const cpuS = cpuSeconds(cp.pid) - cpu0 - idleRate * ((tEnd - tReq) / 1000);
      const fleetCpuS = workers.reduce((a, w) => a + cpuSeconds(w.child.pid), 0) - fleetCpu0;
      const lat = got.flatMap((g) => g.times).filter((t) => Number.isFinite(t)).map((t) => t - tRes);
      const c = {
        version: v,
        writeMs: tRes - tReq,
        ...summary(lat),
        maxFromRequest: tAll - tReq,
        got: got.reduce((a, g) => a + g.got, 0),
        missing: got.reduce((a, g) => a + g.missing, 0),
        snapshots: got.reduce((a, g) => a + g.snapshot, 0),
        deltas: got.reduce((a, g) => a + g.delta, 0),
        deltaBytes: got.reduce((a, g) => a + g.deltaBytes, 0) / Math.max(1, got.reduce((a, g) => a + g.delta, 0)),
        snapshotBytes: got.reduce((a, g) => a + g.snapshotBytes, 0) / Math.max(1, got.reduce((a, g) => a + g.snapshot, 0)),
        cpuMs: Math.max(0, cpuS * 1000),
        fleetCpuMs: fleetCpuS * 1000,
        errors: got.reduce((a, g) => a + g.errors, 0),
        reconnects: got.reduce((a, g) => a + g.reconnects, 0),
        lastError: got.map((g) => g.lastError).find((e) => e !== "") ?? "",
        lat,
      };
      // The control plane's own record: every node's acked_version (one big call, after the CPU read).
      const list = await call(cp.url, "GET", "/api/v1/nodes", ADMIN_KEY);
      c.ackedByCp = list.nodes.filter((n) => n.connected && BigInt(n.acked_version ?? 0) >= BigInt(v)).length;
      res.changes.push(c);
      log(
        `change ${m} (v${v}, write ${ms(c.writeMs)} ms): ${c.got} got it (${c.deltas} deltas of ${c.deltaBytes.toFixed(0)} B, ${c.snapshots} snapshots), ` +
          `${c.missing} missing; since the write's response p50 ${ms(c.p50)} ms, p99 ${ms(c.p99)} ms, max ${ms(c.max)} ms ` +
          `(max ${ms(c.maxFromRequest)} ms from the request); CP CPU ${ms(c.cpuMs)} ms, simulated fleet CPU ${ms(c.fleetCpuMs)} ms; CP recorded ${c.ackedByCp} ACKs` +
          (c.errors > 0 ? `; so far ${c.errors} stream errors, ${c.reconnects} reconnects (${c.lastError})` : ""),
      );
    }
    if (res.changes.length > 0) {
      // Overall: every (node, change) latency pooled.
      const pooled = summary(res.changes.flatMap((c) => c.lat));
      res.incremental = {
        p50: pooled.p50,
        p99: pooled.p99,
        max: pooled.max,
        worstP99: Math.max(...res.changes.map((c) => c.p99)),
        cpuMs: median(res.changes.map((c) => c.cpuMs)),
        fleetCpuMs: median(res.changes.map((c) => c.fleetCpuMs)),
        deltaBytes: median(res.changes.map((c) => c.deltaBytes)),
        allGot: res.changes.every((c) => c.missing === 0),
        allAcked: res.changes.every((c) => c.ackedByCp === opts.nodes),
      };
      for (const c of res.changes) delete c.lat;
    }

    // -- reports --
    if (opts.reportMs > 0) {
      await ask(workers, { type: "reports", on: true }, "reports", 10_000);
      // Let every node's first (randomly delayed) report go out before measuring.
      await sleep(opts.reportMs);
      const sent0 = (await ask(workers, { type: "count-reports" }, "report-count", 10_000)).reduce((a, r) => a + r.sent, 0);
      const cpu0 = cpuSeconds(cp.pid);
      const t0 = now();
      const rss0 = rssKb(cp.pid);
      await sleep(opts.windowMs);
      const cpu1 = cpuSeconds(cp.pid);
      const t1 = now();
      const rss1 = rssKb(cp.pid);
      const sent1 = (await ask(workers, { type: "count-reports" }, "report-count", 10_000)).reduce((a, r) => a + r.sent, 0);
      await ask(workers, { type: "reports", on: false }, "reports", 10_000);
      const secs = (t1 - t0) / 1000;
      const cpuPct = ((cpu1 - cpu0) / secs) * 100;
      const reports = sent1 - sent0;
      res.reports = {
        perSecond: reports / secs,
        cpuPct,
        extraCpuPct: cpuPct - res.idleCpuPct,
        usPerReport: reports > 0 ? (((cpuPct - res.idleCpuPct) / 100) * secs * 1e6) / reports : NaN,
        rssKb: rss1,
        rssGrowthKb: rss1 - res.rssIdleKb,
        rssWindowGrowthKb: rss1 - rss0,
      };
      log(
        `reports: ${res.reports.perSecond.toFixed(0)}/s → CP CPU ${cpuPct.toFixed(1)}% (idle ${res.idleCpuPct.toFixed(1)}%), ` +
          `${ms(res.reports.usPerReport)} µs per report; RSS ${(rss1 / 1024).toFixed(0)} MB (${res.reports.rssGrowthKb >= 0 ? "+" : ""}${(res.reports.rssGrowthKb / 1024).toFixed(1)} MB vs idle)`,
      );
    }
  } finally {
    if (workers.length > 0) {
      await Promise.all(
        workers.map(async (w) => {
          try {
            w.send({ type: "stop" });
            await Promise.race([w.exit, sleep(10_000)]);
          } catch {
            // already gone
          }
          if (w.child.exitCode === null) process.kill(w.child.pid, "SIGKILL");
        }),
      );
    }
    await cp.stop();
    if (cp.logs.length > 0) log(`control plane warnings/errors:\n  ${cp.logs.slice(0, 10).join("\n  ")}`);
  }
  return res;
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function log(line) {
  process.stdout.write(`${line}\n`);
}

// ---- main ------------------------------------------------------------------------------------

function table(results) {
  const rows = [
    ["data planes (N)", (r) => String(r.nodes)],
    ["rules (R)", (r) => String(r.rules)],
    ["initial full sync: nodes", (r) => `${r.sync.got}/${r.sync.expected}`],
    ["initial full sync p50 / p99 / max", (r) => `${ms(r.sync.p50)} / ${ms(r.sync.p99)} / ${ms(r.sync.max)} ms`],
    ["initial full sync, all done", (r) => `${ms(r.sync.wallMs)} ms`],
    ["initial full sync: control-plane CPU", (r) => `${r.sync.cpuS.toFixed(2)} s` + (r.sync.reconnects > 0 ? ` (${r.sync.reconnects} reconnects)` : "")],
    ["incremental push p50 / p99 / max", (r) => (r.incremental ? `${ms(r.incremental.p50)} / ${ms(r.incremental.p99)} / ${ms(r.incremental.max)} ms` : "-")],
    ["incremental: every node got / CP saw ACK", (r) => (r.incremental ? `${r.incremental.allGot ? "yes" : "NO"} / ${r.incremental.allAcked ? "yes" : "NO"}` : "-")],
    ["control-plane CPU per push", (r) => (r.incremental ? `${ms(r.incremental.cpuMs)} ms` : "-")],
    ["  of which with no node connected", (r) => `${ms(r.fixedCpuMs)} ms`],
    ["  per node", (r) => (r.incremental ? `${(((r.incremental.cpuMs - r.fixedCpuMs) * 1000) / r.nodes).toFixed(1)} µs` : "-")],
    ["simulated fleet CPU per push (same cores)", (r) => (r.incremental ? `${ms(r.incremental.fleetCpuMs)} ms` : "-")],
    ["bytes per push per node: full", (r) => kb(r.sync.snapshotBytes)],
    ["bytes per push per node: delta", (r) => (r.incremental ? `${r.incremental.deltaBytes.toFixed(0)} B` : "-")],
    ["RSS before fleet → idle fleet", (r) => `${(r.rssBaseKb / 1024).toFixed(0)} → ${(r.rssIdleKb / 1024).toFixed(0)} MB`],
    ["KB per idle node", (r) => r.kbPerIdleNode.toFixed(1)],
    ["idle CPU", (r) => `${r.idleCpuPct.toFixed(1)}%`],
    ["GET /api/v1/nodes (all N)", (r) => `${ms(r.listNodes.ms)} ms`],
    ["reports: rate → CP CPU (idle)", (r) => (r.reports ? `${r.reports.perSecond.toFixed(0)}/s → ${r.reports.cpuPct.toFixed(1)}% (${r.idleCpuPct.toFixed(1)}%)` : "-")],
    ["reports: CPU per report, RSS vs idle", (r) => (r.reports ? `${ms(r.reports.usPerReport)} µs, ${r.reports.rssGrowthKb >= 0 ? "+" : ""}${(r.reports.rssGrowthKb / 1024).toFixed(1)} MB` : "-")],
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const cells = rows.map(([name, f]) => [name, ...results.map((r) => f(r))]);
  const widths = results.map((_, i) => Math.max(...cells.map((c) => c[i + 1].length)));
  const line = (c) => `| ${c[0].padEnd(w0)} | ${c.slice(1).map((x, i) => x.padEnd(widths[i])).join(" | ")} |`;
  return [line(["", ...results.map((r) => `R=${r.rules}`)]), `|${"-".repeat(w0 + 2)}|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...cells.map(line)].join("\n");
}

const command = `node test/bench/fanout.mjs ${process.argv.slice(2).join(" ")}`.trim();
log(`fanout: ${opts.nodes} data planes in ${opts.workers} workers, ${opts.streamsPerConn} streams per HTTP/2 connection, rules ${opts.rules.join(" and ")}, ${opts.changes} changes; ${os.cpus().length} cores, node ${process.version}, load ${os.loadavg()[0].toFixed(2)}`);
const results = [];
try {
  for (const r of opts.rules) results.push(await runScenario(r));
} catch (err) {
  process.stderr.write(`fanout failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  killChildren();
  process.exit(1);
}
log(`\n${table(results)}\n`);
if (results.length >= 2 && results.every((r) => r.incremental)) {
  const a = results[0];
  const b = results[results.length - 1];
  log(
    `delta bytes R=${b.rules} / R=${a.rules}: ${(b.incremental.deltaBytes / a.incremental.deltaBytes).toFixed(2)}× ` +
      `(full snapshot: ${(b.sync.snapshotBytes / a.sync.snapshotBytes).toFixed(0)}×)`,
  );
}
log(`reproduce: npm run build && ${command}`);
if (opts.json !== "") writeFileSync(opts.json, JSON.stringify({ command, load: os.loadavg(), results }, null, 2));
clearTimeout(hardStop);

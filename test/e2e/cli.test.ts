/**
 * The `gateway` command as an operator runs it: flags and help, the all-in-one mode `npm start`
 * runs (generated admin key printed once and kept 0600), and graceful shutdown on SIGTERM (a data
 * plane finishes the request in flight; a control plane does not wait on idle client connections).
 */
import { once } from "node:events";
import { readFileSync, statSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { GatewayApi } from "../support/api.js";
import { httpRequest } from "../support/http.js";
import { runGateway, startAllInOne, startControlPlane, startDataPlane } from "../support/processes.js";
import { startTarget } from "../support/targets.js";
import { teardown } from "../support/teardown.js";
import { sendRequests } from "../support/traffic.js";

afterEach(teardown);

describe("flags and help", () => {
  // The flags each command has at least; features may add more, which --help must list too.
  const commands: Record<string, string[]> = {
    "control-plane": ["listen", "data-dir", "admin-key", "node-token", "log-level", "help"],
    "data-plane": ["listen", "control-plane", "node-id", "token", "label", "drain-ms", "log-level", "help"],
    "all-in-one": ["listen", "proxy-listen", "data-dir", "admin-key", "log-level", "help"],
  };

  it.each(Object.entries(commands))("gateway %s --help lists every flag and exits 0", async (command, flags) => {
    const r = await runGateway([command, "--help"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
    // "  --name VALUE   help text" rows (help text after two or more spaces); VALUE is absent for boolean flags.
    const rows = [...r.stdout.matchAll(/^ {2}--([a-z0-9-]+)(?: (\S+))?\s{2,}(\S.*)$/gm)].map((m) => ({ name: m[1], value: m[2], help: m[3] }));
    expect(rows.map((x) => x.name)).toEqual(expect.arrayContaining(flags));
    expect(new Set(rows.map((x) => x.name)).size).toBe(rows.length);
    // Every listed flag is one the command really accepts (an unknown one would fail before --help).
    const all = rows.filter((x) => x.name !== "help").flatMap((x) => (x.value === undefined ? [`--${x.name}`] : [`--${x.name}`, "x"]));
    const accepted = await runGateway([command, ...all, "--help"]);
    expect(accepted.code, accepted.stderr).toBe(0);
  });

  it("gateway --help lists the commands and exits 0", async () => {
    const r = await runGateway(["--help"]);
    expect(r.code).toBe(0);
    for (const c of Object.keys(commands)) expect(r.stdout).toContain(c);
  });

  it.each([
    [["control-plane", "--bogus"], /--bogus/],
    [["data-plane", "--control-plane", "http://127.0.0.1:1", "--token", "t", "--nope", "1"], /--nope/],
    [["all-in-one", "--listen"], /--listen/],
    [["control-plane", "--listen", "nonsense"], /--listen/],
    [["data-plane", "--token", "t"], /--control-plane/],
    [["frobnicate"], /frobnicate/],
  ])("gateway %j exits non-zero with a one-line reason on stderr", async (args, reason) => {
    const r = await runGateway(args);
    expect(r.code).not.toBe(0);
    expect(r.code).not.toBeNull();
    expect(r.stdout).toBe("");
    const lines = r.stderr.split("\n").filter((l) => l !== "");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(reason);
  });
});

describe("all-in-one", () => {
  it("without an admin key prints a generated key once, stores it 0600, and serves config API and proxy on port 0", async () => {
    const target = await startTarget("aio-target");
    const aio = await startAllInOne();
    const keyFile = path.join(aio.dataDir, "admin.key");
    const stored = readFileSync(keyFile, "utf8").trim();
    expect(stored).not.toBe("");
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    // Printed on stdout exactly once, as its own line.
    expect(aio.proc.stdoutLines.filter((l) => l.includes(stored))).toEqual([`  ${stored}`]);

    // The data plane inside found the control plane although both asked for port 0.
    const api = new GatewayApi(aio.url, stored);
    const nodeId = `${os.hostname()}-local`;
    const nodes = await api.waitForConnected([nodeId]);
    expect(nodes.nodes.map((n) => n.node_id)).toEqual([nodeId]);
    const tenant = await api.createTenant("aio");
    const rule = await api.mustCreateRule(tenant, { path: "/aio/*", targets: [{ url: target.url }] });
    await api.waitForAcked(rule.revision, [nodeId]);
    expect((await sendRequests(aio.proxyUrl, 5, { path: "/aio/x" })).byTarget).toEqual({ "aio-target": 5 });
    await aio.proc.stop();

    // A second start on the same data dir reuses the key and prints nothing about it.
    const again = await startAllInOne({ dataDir: aio.dataDir });
    expect(again.proc.stdout).not.toContain(stored);
    expect(again.proc.stdout).not.toMatch(/Generated admin key/);
    expect((await new GatewayApi(again.url, stored).call("GET", "/api/v1/tenants")).status).toBe(200);
    // The configuration survived the restart.
    const byName = (await new GatewayApi(again.url, stored).call("GET", "/api/v1/tenants")).json.tenants.map((t: { name: string }) => t.name);
    expect(byName).toEqual(["aio"]);
  });

  it("with GATEWAY_ADMIN_KEY uses that key, prints none and writes no key file", async () => {
    const key = "adm_from_env_0123456789";
    const aio = await startAllInOne({ env: { GATEWAY_ADMIN_KEY: key } });
    expect(aio.proc.stdout).not.toMatch(/Generated admin key/);
    const ok = await new GatewayApi(aio.url, key).call("GET", "/api/v1/tenants");
    expect(ok.status).toBe(200);
    const wrong = await new GatewayApi(aio.url, "adm_not_it").call("GET", "/api/v1/tenants");
    expect(wrong.status).toBe(401);
    expect(() => statSync(path.join(aio.dataDir, "admin.key"))).toThrow();
  });
});

describe("graceful shutdown", () => {
  it("a data plane that gets SIGTERM finishes the slow request in flight with 200, then exits 0", async () => {
    const cp = await startControlPlane();
    const api = GatewayApi.of(cp);
    const slow = await startTarget("slow", { delayMs: 1_000 });
    const dp = await startDataPlane({ controlPlane: cp.url, nodeId: "drain-dp", token: cp.nodeToken });
    const tenant = await api.createTenant("drain");
    const rule = await api.mustCreateRule(tenant, { path: "/slow/*", targets: [{ url: slow.url }] });
    await api.waitForAcked(rule.revision, [dp.nodeId]);

    const inFlight = httpRequest(`${dp.url}/slow/x`);
    await slow.waitForRequests(1); // the request reached the target: it is in flight in the data plane
    const mark = dp.proc.mark();
    dp.proc.signal("SIGTERM");
    await dp.proc.waitForMsg("shutting down", {}, { since: mark });
    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(res.text).toBe("slow");
    const exit = await dp.proc.exited;
    expect(exit).toEqual({ code: 0, signal: null });
  });

  it("a control plane that gets SIGTERM does not wait on an idle keep-alive REST connection", async () => {
    const cp = await startControlPlane();
    // A client that keeps its connection open between requests, as browsers and SDKs do.
    const agent = new http.Agent({ keepAlive: true });
    try {
      const req = http.get(`${cp.url}/api/v1/tenants`, { agent, headers: { authorization: `Bearer ${cp.adminKey}` } });
      const [res] = (await once(req, "response")) as [http.IncomingMessage];
      res.resume();
      await once(res, "end");
      expect(res.statusCode).toBe(200);
      // stop() requires exit code 0 within DEFAULT_STOP_TIMEOUT_MS (below the 5 s force-close grace).
      await cp.proc.stop();
    } finally {
      agent.destroy();
    }
  });
});

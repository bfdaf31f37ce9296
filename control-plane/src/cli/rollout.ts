import { create, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  RolloutAnalysisSchema,
  RolloutOverrideSchema,
  RolloutSchema,
  RolloutService,
  RolloutStepSchema,
  type BackendFigures,
  type Rollout,
} from "../../../proto/gen/gateway/v1/rollout_pb.js";
import { HashOnSchema } from "../../../proto/gen/gateway/v1/upstream_pb.js";
import { helpText, parseFlags, parseUrl, UsageError, type FlagSpec, type ParsedFlags } from "./args.js";

/**
 * `gateway rollout <verb>`: the operator's client of the RolloutService, a generated Connect client
 * (createClient(RolloutService, createConnectTransport(...))). `status ID --watch` follows
 * WatchRollout and draws the steps as a progress bar with the current figures against the
 * thresholds: redrawn in place on a terminal, one line per update otherwise (logs, CI).
 *
 * Exit status: 0 on success (for --watch: the rollout was promoted), 1 when the call failed or the
 * watched rollout was rolled back or aborted, 2 for a usage error.
 */

const CONNECTION_FLAGS: FlagSpec[] = [
  { name: "control-plane", value: "URL", help: "Control-plane URL", default: "http://127.0.0.1:8080", env: "GATEWAY_CONTROL_PLANE" },
  { name: "key", value: "K", help: "API key (the tenant's, or the admin key)", env: "GATEWAY_API_KEY" },
  { name: "tenant", value: "ID", help: "Tenant id", env: "GATEWAY_TENANT" },
  { name: "json", help: "Print the rollout as JSON instead of text" },
];

const WATCH_FLAG: FlagSpec = { name: "watch", help: "Follow the rollout live until it is promoted, rolled back or aborted" };
const REASON_FLAG: FlagSpec = { name: "reason", value: "TEXT", help: "Why, recorded in the rollout's events" };

const CREATE_FLAGS: FlagSpec[] = [
  { name: "rule", value: "ID", help: "Rule whose traffic moves (it must route to the stable upstream by upstream_id)", required: true },
  { name: "canary", value: "UPSTREAM", help: "Canary upstream id", required: true },
  { name: "stable", value: "UPSTREAM", help: "Stable upstream id (default: the rule's upstream)" },
  { name: "steps", value: "W[:HOLD],...", help: "Canary weights in percent, each with an optional hold, e.g. 1,10,25,50,100 or 5:30s,50:2m,100", default: "1,10,25,50,100" },
  { name: "hold", value: "DURATION", help: "Hold of steps that name none (500ms, 30s, 5m, 1h)", default: "60s" },
  { name: "interval", value: "DURATION", help: "Analysis interval (bounds the time to roll back)", default: "10s" },
  { name: "window", value: "DURATION", help: "Analysis window (default: the whole step so far)" },
  { name: "min-requests", value: "N", help: "Canary requests needed per step before a verdict", default: "100" },
  { name: "max-error-rate", value: "PCT", help: "Highest canary error rate, percent", default: "5" },
  { name: "max-p99-ms", value: "MS", help: "Highest canary p99 latency (default: none)" },
  { name: "max-error-rate-increase", value: "POINTS", help: "Highest excess of the canary's error rate over stable's, percentage points" },
  { name: "max-p99-increase-ms", value: "MS", help: "Highest excess of the canary's p99 over stable's" },
  { name: "sticky", value: "SOURCE[:NAME]", help: "Sticky users: header:NAME, cookie:NAME, query:NAME, jwt_claim:NAME or client_ip" },
  { name: "override-header", value: "NAME[=VALUE]", help: "Header that forces the canary for testers, e.g. X-Canary (value default true)" },
  { name: "override-query", value: "NAME[=VALUE]", help: "Query parameter that forces the canary, e.g. use_canary" },
  WATCH_FLAG,
  ...CONNECTION_FLAGS,
];

const VERBS: Record<string, { usage: string; summary: string; flags: FlagSpec[] }> = {
  create: { usage: "gateway rollout create --rule ID --canary UPSTREAM [flags]", summary: "Starts a canary rollout of a rule.", flags: CREATE_FLAGS },
  status: { usage: "gateway rollout status ID [--watch] [flags]", summary: "Shows a rollout: steps, figures against thresholds, latest events.", flags: [WATCH_FLAG, ...CONNECTION_FLAGS] },
  list: { usage: "gateway rollout list [flags]", summary: "Lists the tenant's rollouts, newest first.", flags: CONNECTION_FLAGS },
  pause: { usage: "gateway rollout pause ID [flags]", summary: "Stops advancing (automatic rollback stays on).", flags: [REASON_FLAG, ...CONNECTION_FLAGS] },
  resume: { usage: "gateway rollout resume ID [flags]", summary: "Continues a paused rollout.", flags: [REASON_FLAG, ...CONNECTION_FLAGS] },
  promote: { usage: "gateway rollout promote ID [flags]", summary: "Sends 100% to the canary now and ends the rollout.", flags: [REASON_FLAG, ...CONNECTION_FLAGS] },
  abort: { usage: "gateway rollout abort ID [flags]", summary: "Sends 100% back to stable now and ends the rollout.", flags: [REASON_FLAG, ...CONNECTION_FLAGS] },
};

/** Help of `gateway rollout`. */
export const ROLLOUT_USAGE = `Usage: gateway rollout <verb> [ID] [flags]

Verbs:
${Object.entries(VERBS)
  .map(([v, d]) => `  ${v.padEnd(10)} ${d.summary}`)
  .join("\n")}

Every verb takes --control-plane URL, --key K (env GATEWAY_API_KEY) and --tenant ID.
Run "gateway rollout <verb> --help" for its flags.
`;

/** Output streams and terminal facts, injectable for tests. */
export interface CliIo {
  readonly out: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  readonly err: NodeJS.WritableStream;
}

/** Runs `gateway rollout ...` and returns the exit status. */
export async function runRollout(argv: readonly string[], io: CliIo = { out: process.stdout, err: process.stderr }): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === undefined || verb === "--help" || verb === "-h" || verb === "help") {
    io.out.write(ROLLOUT_USAGE);
    return 0;
  }
  const spec = VERBS[verb];
  if (spec === undefined) throw new UsageError(`rollout: unknown verb "${verb}" (expected ${Object.keys(VERBS).join(", ")})`);
  const { positionals, flagArgs } = splitArgs(`rollout ${verb}`, rest, spec.flags);
  const flags = parseFlags(`rollout ${verb}`, flagArgs, spec.flags);
  if (flags === "help") {
    io.out.write(helpText(spec.usage, spec.summary, spec.flags));
    return 0;
  }
  const wantsId = verb !== "create" && verb !== "list";
  if (wantsId && positionals.length !== 1) throw new UsageError(`rollout ${verb}: expected one rollout ID, got ${positionals.length}`);
  if (!wantsId && positionals.length > 0) throw new UsageError(`rollout ${verb}: unexpected argument "${positionals[0]}"`);
  const key = one(flags, "key");
  if (key === undefined) throw new UsageError(`rollout ${verb}: --key is required (or env GATEWAY_API_KEY)`);
  const tenantId = one(flags, "tenant");
  if (tenantId === undefined) throw new UsageError(`rollout ${verb}: --tenant is required (or env GATEWAY_TENANT)`);
  const baseUrl = parseUrl("control-plane", one(flags, "control-plane")!);
  const asJson = flags.has("json");
  const create_ = verb === "create" ? buildRollout(flags) : undefined;

  const client = createClient(RolloutService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  const callOpts = { headers: { authorization: `Bearer ${key}` } };
  const print = (r: Rollout) => io.out.write(asJson ? `${JSON.stringify(rolloutJson(r), null, 2)}\n` : `${render(r, Date.now()).join("\n")}\n`);
  try {
    switch (verb) {
      case "create": {
        const { rollout } = await client.createRollout({ tenantId, rollout: create_ }, callOpts);
        if (flags.has("watch")) return await watch(client, tenantId, rollout!.id, callOpts, io, asJson);
        print(rollout!);
        return 0;
      }
      case "status": {
        if (flags.has("watch")) return await watch(client, tenantId, positionals[0], callOpts, io, asJson);
        print((await client.getRollout({ tenantId, rolloutId: positionals[0] }, callOpts)).rollout!);
        return 0;
      }
      case "list": {
        const { rollouts } = await client.listRollouts({ tenantId }, callOpts);
        if (asJson) io.out.write(`${JSON.stringify({ rollouts: rollouts.map(rolloutJson) }, null, 2)}\n`);
        else for (const r of rollouts) io.out.write(`${r.id}  ${r.state.padEnd(11)} rule ${r.ruleId}  ${r.stableUpstreamId} → ${r.canaryUpstreamId}  canary ${r.currentWeight}%  step ${r.currentStep + 1}/${r.steps.length}\n`);
        return 0;
      }
      default: {
        const req = { tenantId, rolloutId: positionals[0], reason: one(flags, "reason") ?? "" };
        const call =
          verb === "pause" ? client.pauseRollout(req, callOpts) : verb === "resume" ? client.resumeRollout(req, callOpts) : verb === "promote" ? client.promoteRollout(req, callOpts) : client.abortRollout(req, callOpts);
        print((await call).rollout!);
        return 0;
      }
    }
  } catch (err) {
    const e = ConnectError.from(err);
    io.err.write(`gateway rollout ${verb}: ${Code[e.code] ?? e.code}: ${e.rawMessage}\n`);
    return 1;
  }
}

// ---- watching ----

async function watch(client: Client<typeof RolloutService>, tenantId: string, rolloutId: string, callOpts: { headers: Record<string, string> }, io: CliIo, asJson: boolean): Promise<number> {
  const tty = io.out.isTTY === true && !asJson;
  let drawn = 0;
  let last: Rollout | undefined;
  // Line mode prints a line when something changed, figures at most once a second: a log, not a ticker.
  let printed = { revision: -1n, verdict: "", at: 0 };
  const draw = () => {
    if (last === undefined) return;
    // A pseudo-terminal may report 0 columns: fall back to a usual width.
    const columns = io.out.columns !== undefined && io.out.columns >= 40 ? io.out.columns : 100;
    // Lines cut to the terminal's width, so none wraps and the frame's height is its line count.
    const lines = render(last, Date.now(), columns).map((l) => (l.length >= columns ? `${l.slice(0, columns - 2)}…` : l));
    // Move back over the previous frame and clear it, then draw the new one.
    io.out.write(`${drawn > 0 ? `\x1b[${drawn}F\x1b[J` : ""}${lines.join("\n")}\n`);
    drawn = lines.length;
  };
  // On a terminal the hold timer moves between updates: redraw every second.
  const timer = tty ? setInterval(draw, 1_000) : undefined;
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once("SIGINT", stop);
  try {
    for await (const msg of client.watchRollout({ tenantId, rolloutId }, { ...callOpts, signal: ac.signal })) {
      last = msg.rollout!;
      if (tty) draw();
      else {
        const now = Date.now();
        const verdict = `${last.lastAnalysis?.verdict}`;
        const changed = last.revision !== printed.revision; // a transition: always shown
        const due = now - printed.at >= 1_000 && (!asJson || verdict !== printed.verdict);
        if (!changed && !due) continue;
        printed = { revision: last.revision, verdict, at: now };
        io.out.write(asJson ? `${JSON.stringify(rolloutJson(last))}\n` : `${summaryLine(last, now)}\n`);
      }
    }
  } catch (err) {
    if (!ac.signal.aborted) throw err;
    return 130;
  } finally {
    if (timer !== undefined) clearInterval(timer);
    process.removeListener("SIGINT", stop);
  }
  if (last === undefined) return 1;
  if (!tty && !asJson) io.out.write(`${render(last, Date.now()).join("\n")}\n`);
  if (last.state === "promoted") return 0;
  io.err.write(`rollout ${last.id} ended ${last.state}: ${last.events.at(-1)?.reason ?? ""}\n`);
  return 1;
}

// ---- rendering ----

const BAR_WIDTH = 40;

function pct(v: number): string {
  return `${Math.round(v * 100) / 100}%`;
}

function duration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  if (ms < 120_000) return `${Math.round(ms / 100) / 10}s`;
  if (ms < 7_200_000) return `${Math.round(ms / 6_000) / 10}m`;
  return `${Math.round(ms / 360_000) / 10}h`;
}

function clock(ms: bigint): string {
  return new Date(Number(ms)).toISOString().slice(11, 19);
}

/**
 * The steps as one bar: each step a segment as wide as its share of the bar; finished steps full,
 * the current one filled by its hold progress, later ones empty. A rollback shows the bar empty up
 * to where it stopped, marked with ✗.
 */
export function progressBar(r: Rollout, now: number, width = BAR_WIDTH): string {
  const n = r.steps.length;
  const seg = Math.max(1, Math.floor(width / n));
  let bar = "";
  for (let i = 0; i < n; i++) {
    let filled: number;
    if (r.state === "promoted" || i < r.currentStep) filled = seg;
    else if (i > r.currentStep || r.state === "pending" || r.state === "rolled_back" || r.state === "aborted") filled = 0;
    else {
      const hold = r.steps[i].holdMs;
      const elapsed = now - Number(r.stepStartedAtMs);
      filled = hold === 0 ? seg : Math.min(seg, Math.floor((seg * elapsed) / hold));
    }
    const empty = i === r.currentStep && (r.state === "rolled_back" || r.state === "aborted") ? "✗" + "░".repeat(seg - 1) : "░".repeat(seg - filled);
    bar += "█".repeat(filled) + empty;
  }
  return `[${bar}]`;
}

function against(value: string, limit: string | undefined): string {
  return limit === undefined ? value : `${value} (max ${limit})`;
}

function figuresLine(label: string, f: BackendFigures | undefined, r: Rollout, isCanary: boolean): string {
  if (f === undefined) return `${label}  no figures yet`;
  const a = r.analysis;
  const err = isCanary ? against(pct(f.errorRatePercent), a?.maxErrorRatePercent !== undefined ? pct(a.maxErrorRatePercent) : undefined) : pct(f.errorRatePercent);
  const p99 = isCanary ? against(`${Math.round(f.p99Ms)} ms`, a?.maxP99Ms !== undefined ? `${a.maxP99Ms} ms` : undefined) : `${Math.round(f.p99Ms)} ms`;
  const reqs = isCanary && a?.minRequests !== undefined ? `${f.requests}/${a.minRequests}` : `${f.requests}`;
  return `${label}  requests ${reqs}  errors ${err}  p50 ${Math.round(f.p50Ms)} ms  p99 ${p99}`;
}

/** The rollout as text lines: header, bar with step marks, figures against thresholds, verdict, last events. */
export function render(r: Rollout, now: number, columns = 100): string[] {
  const width = Math.max(10, Math.min(BAR_WIDTH, columns - 20));
  const step = r.steps[r.currentStep];
  const elapsed = now - Number(r.stepStartedAtMs);
  const where =
    r.state === "pending"
      ? "waiting for the first step"
      : r.state === "promoted"
        ? "canary at 100%: promoted"
        : r.state === "rolled_back" || r.state === "aborted"
          ? `stable at 100% (${r.state} at step ${r.currentStep + 1}/${r.steps.length})`
          : `step ${r.currentStep + 1}/${r.steps.length}: canary at ${r.currentWeight}%, ${
              elapsed >= (step?.holdMs ?? 0) ? `held ${duration(Math.max(0, elapsed))} (hold ${duration(step?.holdMs ?? 0)} over: waiting for a passing analysis)` : `held ${duration(Math.max(0, elapsed))} of ${duration(step?.holdMs ?? 0)}`
            }${r.state === "paused" ? " (paused)" : ""}`;
  const marks = r.steps.map((s, i) => `${s.weight}%${i < r.currentStep || r.state === "promoted" ? "✓" : i === r.currentStep && r.state !== "pending" ? "●" : ""}`).join(" ");
  const a = r.lastAnalysis;
  const lines = [
    `Rollout ${r.id}  rule ${r.ruleId}  ${r.stableUpstreamId} → ${r.canaryUpstreamId}  [${r.state}]${r.ruleOutOfSync ? "  (rule out of sync: retrying)" : ""}`,
    `  ${progressBar(r, now, width)} ${where}`,
    `  steps   ${marks}`,
    `  ${figuresLine("canary", a?.canary, r, true)}`,
    `  ${figuresLine("stable", a?.stable, r, false)}`,
    `  verdict ${a === undefined ? "(no analysis yet)" : `${a.verdict}: ${a.reason} (window ${duration(a.windowMs)})`}`,
  ];
  for (const e of r.events.slice(-3)) lines.push(`  ${clock(e.atMs)} ${e.type.padEnd(16)} ${e.reason}`);
  return lines;
}

/** One line per update for logs: time, state, step, figures, verdict. */
export function summaryLine(r: Rollout, now: number): string {
  const a = r.lastAnalysis;
  const c = a?.canary;
  const figures = c === undefined ? "no figures yet" : `canary ${c.requests} req, ${pct(c.errorRatePercent)} errors, p99 ${Math.round(c.p99Ms)} ms; ${a!.verdict}`;
  return `${new Date(now).toISOString()} ${r.id} ${r.state} step ${r.currentStep + 1}/${r.steps.length} canary ${r.currentWeight}% ${progressBar(r, now, 20)} ${figures}`;
}

/** The rollout as the REST API shows it (proto JSON, snake_case). */
function rolloutJson(r: Rollout): unknown {
  return toJson(RolloutSchema, r, { useProtoFieldName: true });
}

// ---- flags ----

function one(flags: ParsedFlags, name: string): string | undefined {
  return flags.get(name)?.[0];
}

/** Separates positional arguments (the rollout ID) from flags and their values. */
function splitArgs(command: string, argv: readonly string[], specs: readonly FlagSpec[]): { positionals: string[]; flagArgs: string[] } {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const positionals: string[] = [];
  const flagArgs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("-")) {
      positionals.push(arg);
      continue;
    }
    flagArgs.push(arg);
    const name = arg.replace(/^--?/, "").split("=", 1)[0];
    if (!arg.includes("=") && byName.get(name)?.value !== undefined && i + 1 < argv.length) flagArgs.push(argv[++i]);
  }
  if (positionals.some((p) => p === "")) throw new UsageError(`${command}: empty argument`);
  return { positionals, flagArgs };
}

/** Parses "500ms", "30s", "5m", "1h" or plain milliseconds. */
export function parseDuration(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (m === null) throw new UsageError(`--${flag}: expected a duration like 500ms, 30s, 5m or 1h, got "${v}"`);
  const n = Number(m[1]) * ({ ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const)[(m[2] ?? "ms") as "ms" | "s" | "m" | "h"];
  if (!Number.isSafeInteger(Math.round(n)) || n > 4_294_967_295) throw new UsageError(`--${flag}: too long: "${v}"`);
  return Math.round(n);
}

function number(flag: string, v: string): number {
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < 0) throw new UsageError(`--${flag}: expected a non-negative number, got "${v}"`);
  return n;
}

function integer(flag: string, v: string): number {
  if (!/^\d+$/.test(v)) throw new UsageError(`--${flag}: expected a non-negative integer, got "${v}"`);
  return Number(v);
}

function nameValue(flag: string, v: string): { name: string; value: string } {
  const eq = v.indexOf("=");
  const name = eq === -1 ? v : v.slice(0, eq);
  if (name === "") throw new UsageError(`--${flag}: expected NAME[=VALUE], got "${v}"`);
  return { name, value: eq === -1 ? "" : v.slice(eq + 1) };
}

/** The Rollout of `create`'s flags; the server validates the rest and names the field. */
function buildRollout(flags: ParsedFlags): Rollout {
  const hold = parseDuration("hold", one(flags, "hold")!);
  const steps = one(flags, "steps")!
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .map((s) => {
      const [w, h] = s.split(":", 2);
      return create(RolloutStepSchema, { weight: integer("steps", w.replace(/%$/, "")), holdMs: h === undefined ? hold : parseDuration("steps", h) });
    });
  const analysis = create(RolloutAnalysisSchema, {
    intervalMs: parseDuration("interval", one(flags, "interval")!),
    windowMs: one(flags, "window") === undefined ? 0 : parseDuration("window", one(flags, "window")!),
    minRequests: BigInt(integer("min-requests", one(flags, "min-requests")!)),
    maxErrorRatePercent: number("max-error-rate", one(flags, "max-error-rate")!.replace(/%$/, "")),
  });
  if (one(flags, "max-p99-ms") !== undefined) analysis.maxP99Ms = integer("max-p99-ms", one(flags, "max-p99-ms")!);
  if (one(flags, "max-error-rate-increase") !== undefined) analysis.maxErrorRateIncreasePoints = number("max-error-rate-increase", one(flags, "max-error-rate-increase")!);
  if (one(flags, "max-p99-increase-ms") !== undefined) analysis.maxP99IncreaseMs = integer("max-p99-increase-ms", one(flags, "max-p99-increase-ms")!);
  const r = create(RolloutSchema, {
    ruleId: one(flags, "rule")!,
    canaryUpstreamId: one(flags, "canary")!,
    stableUpstreamId: one(flags, "stable") ?? "",
    steps,
    analysis,
  });
  const sticky = one(flags, "sticky");
  if (sticky !== undefined) {
    const [source, name] = sticky.split(":", 2);
    r.hashOn = create(HashOnSchema, { source, name: name ?? "" });
  }
  const oh = one(flags, "override-header");
  const oq = one(flags, "override-query");
  if (oh !== undefined || oq !== undefined) {
    const h = oh === undefined ? { name: "", value: "" } : nameValue("override-header", oh);
    const q = oq === undefined ? { name: "", value: "" } : nameValue("override-query", oq);
    r.headerOverride = create(RolloutOverrideSchema, { header: h.name, headerValue: h.value, query: q.name, queryValue: q.value });
  }
  return r;
}

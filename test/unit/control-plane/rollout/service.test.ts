/**
 * The RolloutService over an in-memory Connect transport: authentication, the calls a generated
 * client makes (the CLI's), and WatchRollout streaming every change until the rollout is final.
 */
import { Code, ConnectError, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RolloutService } from "../../../../proto/gen/gateway/v1/rollout_pb.js";
import { Authenticator } from "../../../../control-plane/src/config/auth.js";
import { RolloutServiceImpl } from "../../../../control-plane/src/rollout/connect-service.js";
import { Harness } from "./harness.js";

const ADMIN_KEY = "admin-secret";
const admin = { headers: { authorization: `Bearer ${ADMIN_KEY}` } };
let h: Harness;
let client: Client<typeof RolloutService>;

beforeEach(async () => {
  h = await Harness.start();
  const auth = new Authenticator(ADMIN_KEY, (hash) => h.api.lookupKey(hash));
  const impl = new RolloutServiceImpl(h.rollouts, auth);
  client = createClient(RolloutService, createRouterTransport((router) => router.service(RolloutService, impl)));
});

afterEach(async () => {
  await h.close();
});

function spec() {
  return {
    ruleId: h.ruleId,
    canaryUpstreamId: h.canaryId,
    steps: [
      { weight: 25, holdMs: 200 },
      { weight: 100, holdMs: 200 },
    ],
    analysis: { intervalMs: 100, minRequests: 10n },
  };
}

describe("RolloutService", () => {
  it("needs a key, and a tenant key sees only its tenant", async () => {
    const err = await client.createRollout({ tenantId: h.tenantId, rollout: spec() }).catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unauthenticated);
    const { apiKey } = await h.api.createTenant({ kind: "admin" }, "other", undefined);
    const other = await client.listRollouts({ tenantId: h.tenantId }, { headers: { authorization: `Bearer ${apiKey}` } }).catch((e: unknown) => ConnectError.from(e));
    expect((other as ConnectError).code).toBe(Code.NotFound);
  });

  it("creates, reads, lists, pauses, resumes and aborts", async () => {
    const { rollout } = await client.createRollout({ tenantId: h.tenantId, rollout: spec() }, admin);
    expect(rollout?.state).toBe("pending");
    await h.tick();
    const got = await client.getRollout({ tenantId: h.tenantId, rolloutId: rollout!.id }, admin);
    expect(got.rollout).toMatchObject({ state: "progressing", currentWeight: 25 });
    expect((await client.listRollouts({ tenantId: h.tenantId }, admin)).rollouts.map((r) => r.id)).toEqual([rollout!.id]);
    expect((await client.pauseRollout({ tenantId: h.tenantId, rolloutId: rollout!.id, reason: "hold on" }, admin)).rollout?.state).toBe("paused");
    expect((await client.resumeRollout({ tenantId: h.tenantId, rolloutId: rollout!.id }, admin)).rollout?.state).toBe("progressing");
    const aborted = await client.abortRollout({ tenantId: h.tenantId, rolloutId: rollout!.id, reason: "no" }, admin);
    expect(aborted.rollout?.state).toBe("aborted");
    const again = await client.promoteRollout({ tenantId: h.tenantId, rolloutId: rollout!.id }, admin).catch((e: unknown) => ConnectError.from(e));
    expect((again as ConnectError).code).toBe(Code.FailedPrecondition);
  });

  it("answers INVALID_ARGUMENT naming the field", async () => {
    const err = await client
      .createRollout({ tenantId: h.tenantId, rollout: { ...spec(), steps: [{ weight: 50 }, { weight: 20 }] } }, admin)
      .catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).rawMessage).toMatch(/^steps\[1\]\.weight:/);
  });

  it("WatchRollout streams the rollout, its analyses and transitions, and ends when it is final", async () => {
    const { rollout } = await client.createRollout({ tenantId: h.tenantId, rollout: spec() }, admin);
    h.healthy(50);
    const seen: { state: string; step: number; verdict: string | undefined }[] = [];
    const watching = (async () => {
      for await (const msg of client.watchRollout({ tenantId: h.tenantId, rolloutId: rollout!.id }, admin)) {
        seen.push({ state: msg.rollout!.state, step: msg.rollout!.currentStep, verdict: msg.rollout!.lastAnalysis?.verdict });
      }
    })();
    // Let the stream send its first message before anything changes.
    while (seen.length === 0) await new Promise((r) => setTimeout(r, 5));
    await h.tick();
    for (let i = 0; i < 6 && h.rollout(rollout!.id).state !== "promoted"; i++) {
      await h.run(100);
      await new Promise((r) => setTimeout(r, 5));
    }
    await watching; // ends by itself after "promoted"
    expect(seen[0]).toMatchObject({ state: "pending" });
    expect(seen.at(-1)).toMatchObject({ state: "promoted" });
    expect(seen.some((s) => s.state === "progressing" && s.step === 1)).toBe(true);
    expect(seen.some((s) => s.verdict === "pass")).toBe(true);
  });

  it("WatchRollout ends when the client goes away", async () => {
    const { rollout } = await client.createRollout({ tenantId: h.tenantId, rollout: spec() }, admin);
    const ac = new AbortController();
    const it = client.watchRollout({ tenantId: h.tenantId, rolloutId: rollout!.id }, { ...admin, signal: ac.signal });
    const first = await it[Symbol.asyncIterator]().next();
    expect(first.value?.rollout?.state).toBe("pending");
    ac.abort();
  });
});

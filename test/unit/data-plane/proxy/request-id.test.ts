import type { IncomingMessage } from "node:http";
import { describe, expect, it } from "vitest";
import { isAcceptableRequestId, newRequestId, requestIdOf } from "../../../../data-plane/src/proxy/request-id.js";

const withHeaders = (rawHeaders: string[]) => ({ rawHeaders }) as unknown as IncomingMessage;

describe("newRequestId", () => {
  it("is unique and shares one per-process prefix", () => {
    const ids = Array.from({ length: 10_000 }, newRequestId);
    expect(new Set(ids).size).toBe(ids.length);
    const prefixes = new Set(ids.map((id) => id.split("-")[0]));
    expect(prefixes.size).toBe(1);
    for (const id of ids.slice(0, 10)) expect(id).toMatch(/^[0-9a-z]{13}-[0-9a-z]+$/);
  });
});

describe("requestIdOf", () => {
  it.each([
    [["X-Request-Id", "client-1"], "client-1"],
    [["x-request-id", "client-2", "X-Request-Id", "client-3"], "client-2"],
    [["Host", "a", "X-REQUEST-ID", "client-4"], "client-4"],
  ])("keeps the incoming id %j", (raw, want) => {
    expect(requestIdOf(withHeaders(raw))).toBe(want);
  });

  it.each([[[]], [["x-request-id", ""]], [["x-request-id", "y".repeat(201)]], [["x-request-ix", "nope"]]])(
    "generates one for %j",
    (raw) => {
      expect(requestIdOf(withHeaders(raw))).toMatch(/^[0-9a-z]{13}-[0-9a-z]+$/);
    },
  );

  it("bounds what it keeps", () => {
    expect(isAcceptableRequestId("a".repeat(200))).toBe(true);
    expect(isAcceptableRequestId("a".repeat(201))).toBe(false);
    expect(isAcceptableRequestId("")).toBe(false);
  });
});

import type { Mutation, ResourceKind } from "./store.js";

/** The resource kinds a store accepts; `satisfies` keeps it in step with ResourceKind. */
export const KINDS = { tenant: true, apikey: true, rule: true, upstream: true, rollout: true } satisfies Record<ResourceKind, true>;

/**
 * Validates a mutation at the store's edge and copies it, so the store holds nothing a caller can
 * change later. Shared by every ConfigStore implementation so they accept exactly the same input.
 */
export function toMutation(value: unknown, where: string): Mutation {
  if (typeof value !== "object" || value === null) throw new TypeError(`${where}: must be an object`);
  const { op, kind, id, data } = value as Record<string, unknown>;
  if (typeof kind !== "string" || !Object.hasOwn(KINDS, kind)) {
    throw new TypeError(`${where}.kind: unknown resource kind ${JSON.stringify(kind)}`);
  }
  if (typeof id !== "string") throw new TypeError(`${where}.id: must be a string`);
  if (op === "delete") return Object.freeze({ op, kind: kind as ResourceKind, id });
  if (op !== "put") throw new TypeError(`${where}.op: must be "put" or "delete", got ${JSON.stringify(op)}`);
  if (typeof data !== "string") throw new TypeError(`${where}.data: must be a string`);
  return Object.freeze({ op, kind: kind as ResourceKind, id, data });
}

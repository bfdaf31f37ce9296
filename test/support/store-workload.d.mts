import type { Mutation } from "../../control-plane/src/store/store.js";

/** Mutations committed as version `version`: a pure function of it. */
export function workloadMutations(version: bigint): Mutation[];

/** State after versions 1..version: key `${kind}/${id}` → revision and data. */
export function workloadState(version: bigint): Map<string, { revision: bigint; data: string }>;

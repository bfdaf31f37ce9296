import { isSequenced } from "../balancer/factory.js";
import type { CompiledBackend, CompiledRoute, CompiledTarget } from "../config/compile.js";
import { backendSequenceKey, splitSequenceKey } from "../counters/keys.js";
import type { SequenceSource } from "../counters/source.js";
import { hashKeyOf } from "../split/hash-key.js";
import type { RequestView } from "../split/request-view.js";

/**
 * Selection: which backend serves a request (canary shortcut, then split rules in order, else the
 * rule's own) and which target of it. Kept apart from the handler because where the rotation's
 * position comes from is a concern of its own:
 * - without a sequence source, each balancer's own rotation (synchronous, allocation-free);
 * - with one (Redis counters), `pickAt(position)` on the position the source hands out, for the
 *   balancers and split choosers that are sequenced (round-robin, precomputed weighted
 *   round-robin); the others (least-connections, consistent hashing, random, sticky splits) decide
 *   locally as before. The source may answer with a Promise (a Redis round trip), so these functions
 *   return `T | Promise<T>` and the handler awaits only when it got a Promise.
 *
 * Retries (`exclude` set) always use the local rotation: a retry must avoid a target, which a
 * fleet-wide position cannot promise, and first attempts are what the split's exactness is about.
 */

/** Canary shortcut first, then split rules in order; no match keeps the rule's own backend. */
export function chooseBackend(
  route: CompiledRoute,
  view: RequestView,
  source?: SequenceSource,
): CompiledBackend | Promise<CompiledBackend> {
  const canary = route.canary;
  if (canary !== undefined) {
    if (canary.header !== "" && view.header(canary.header) === canary.headerValue) return canary.backend;
    if (canary.query !== "" && view.query(canary.query) === canary.queryValue) return canary.backend;
  }
  const split = route.split;
  for (let i = 0; i < split.length; i++) {
    const sr = split[i];
    if (!sr.match.test(view)) continue;
    if (sr.sticky !== undefined && sr.hashOn !== undefined) {
      const key = hashKeyOf(sr.hashOn, view);
      if (key !== undefined) {
        const k = sr.sticky.pick(key);
        if (k >= 0) return sr.choices[k].backend;
      }
    }
    const chooser = sr.chooser;
    if (source !== undefined && isSequenced(chooser) && chooser.cycle > 0) {
      const position = source.next(splitSequenceKey(route, i, sr), chooser.cycle);
      if (typeof position === "number") return chooser.pickAt(position).backend;
      return position.then((p) => chooser.pickAt(p).backend);
    }
    const choice = chooser.pick();
    return choice === undefined ? route.backend : choice.backend;
  }
  return route.backend;
}

/**
 * A target of the backend (avoiding `exclude` when another exists), or undefined when none is
 * available. The balancer is read once, so a pick that waits for a position resolves it on the
 * balancer that was current when the request asked, even if health replaced it meanwhile.
 */
export function pickTarget(
  backend: CompiledBackend,
  hashKey: string | undefined,
  exclude: CompiledTarget | undefined,
  source?: SequenceSource,
): CompiledTarget | undefined | Promise<CompiledTarget | undefined> {
  const balancer = backend.balancer;
  if (source === undefined || exclude !== undefined || !isSequenced(balancer) || balancer.cycle === 0) {
    return balancer.pick(hashKey, exclude);
  }
  const position = source.next(backendSequenceKey(backend), balancer.cycle);
  if (typeof position === "number") return balancer.pickAt(position);
  return position.then((p) => balancer.pickAt(p));
}

import type { CompiledBackend, CompiledRoute, CompiledTarget } from "../config/compile.js";
import { hashKeyOf } from "../split/hash-key.js";
import type { RequestView } from "../split/request-view.js";

/**
 * Selection: which backend serves a request (canary shortcut, then split rules in order, else the
 * rule's own) and which target of it. Kept apart from the handler because where the rotation's
 * position comes from (local counters, or a fleet-wide sequence) is a concern of its own.
 */

/** Canary shortcut first, then split rules in order; no match keeps the rule's own backend. */
export function chooseBackend(route: CompiledRoute, view: RequestView): CompiledBackend {
  const canary = route.canary;
  if (canary !== undefined) {
    if (canary.header !== "" && view.header(canary.header) === canary.headerValue) return canary.backend;
    if (canary.query !== "" && view.query(canary.query) === canary.queryValue) return canary.backend;
  }
  for (const sr of route.split) {
    if (!sr.match.test(view)) continue;
    if (sr.sticky !== undefined && sr.hashOn !== undefined) {
      const key = hashKeyOf(sr.hashOn, view);
      if (key !== undefined) {
        const i = sr.sticky.pick(key);
        if (i >= 0) return sr.choices[i].backend;
      }
    }
    const choice = sr.chooser.pick();
    return choice === undefined ? route.backend : choice.backend;
  }
  return route.backend;
}

/** A target of the backend (avoiding `exclude` when another exists), or undefined when none is available. */
export function pickTarget(backend: CompiledBackend, hashKey: string | undefined, exclude: CompiledTarget | undefined): CompiledTarget | undefined {
  return backend.balancer.pick(hashKey, exclude);
}

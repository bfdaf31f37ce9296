import { clone, create, equals } from "@bufbuild/protobuf";
import type { Rollout } from "../../../proto/gen/gateway/v1/rollout_pb.js";
import {
  CanaryRouteSchema,
  RuleSchema,
  SplitRuleSchema,
  TrafficSplitSchema,
  WeightedUpstreamSchema,
  type Rule,
} from "../../../proto/gen/gateway/v1/rule_pb.js";
import { isFinal } from "./lifecycle.js";

/**
 * How a rollout shapes its rule: the one place that knows which rule fields a rollout owns and
 * what they hold at each weight. Pure functions of (rule, rollout, weight).
 *
 * While active, the rollout owns `traffic_split` (one always-matching split rule: the rule's own
 * upstream, i.e. stable, with 100 - W, then the canary upstream with W; hash_on when sticky) and,
 * with a header override, `canary` (the override routed to the canary upstream). Stable is listed
 * first and only ever shrinks, and the split rule keeps index 0 (the sticky seed is the rule id and
 * split index), so a growing weight only moves users into the canary (see split/sticky.ts).
 */

/** The rule as it must be while the canary gets `weight` percent (0: everything on stable). */
export function ruleAtWeight(rule: Rule, rollout: Rollout, weight: number): Rule {
  const next = clone(RuleSchema, rule);
  if (weight <= 0) {
    next.trafficSplit = undefined;
  } else {
    next.trafficSplit = create(TrafficSplitSchema, {
      rules: [
        create(SplitRuleSchema, {
          match: [],
          weightedUpstreams: [
            // Only a weight: the rule's own upstream (stable).
            create(WeightedUpstreamSchema, { weight: 100 - weight }),
            create(WeightedUpstreamSchema, { upstreamId: rollout.canaryUpstreamId, weight }),
          ],
          hashOn: rollout.hashOn,
        }),
      ],
    });
  }
  const o = rollout.headerOverride;
  if (o !== undefined) {
    next.canary =
      weight <= 0
        ? undefined
        : create(CanaryRouteSchema, {
            header: o.header,
            headerValue: o.headerValue,
            query: o.query,
            queryValue: o.queryValue,
            upstreamId: rollout.canaryUpstreamId,
          });
  }
  return next;
}

/** The rule after promotion: it routes to the canary upstream, and the rollout's split and override are gone. */
export function rulePromoted(rule: Rule, rollout: Rollout): Rule {
  const next = ruleAtWeight(rule, rollout, 0);
  next.upstreamId = rollout.canaryUpstreamId;
  return next;
}

/**
 * The rule as `rollout`'s state says it must be: the current step's weight while active (nothing
 * applied yet when pending), stable after a rollback or abort, canary after promotion.
 */
export function desiredRule(rule: Rule, rollout: Rollout): Rule {
  if (rollout.state === "promoted") return rulePromoted(rule, rollout);
  if (isFinal(rollout.state)) return ruleAtWeight(rule, rollout, 0);
  return ruleAtWeight(rule, rollout, rollout.currentWeight);
}

/** Whether two versions of a rule route the same (everything but the revision is equal). */
export function sameRouting(a: Rule, b: Rule): boolean {
  return equals(RuleSchema, { ...a, revision: 0n }, { ...b, revision: 0n });
}

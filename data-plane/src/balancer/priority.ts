/**
 * Priority failover (the seeds' "priority for failover"): targets are grouped by priority, lower
 * numbers first, and traffic goes only to the best group that still has a target able to take it;
 * the next group takes over when the whole group is down. Like gRPC's priority policy this sits in
 * front of the algorithm: the chosen group's available targets are what a balancer is built from.
 */

/** What failover needs of a target. */
export interface PrioritizedTarget {
  /** Failover order: 0 is tried first, then 1, and so on. */
  readonly priority: number;
  /** Weight 0 carries no traffic, so it cannot keep a group alive. */
  readonly weight: number;
}

/** Targets sharing one priority, in their configured order. */
export interface PriorityGroup<T> {
  readonly priority: number;
  readonly targets: readonly T[];
}

/**
 * Groups targets by priority, best first, keeping list order within a group (round-robin and
 * weighted cycles follow it). Done once per snapshot; failover then only walks the groups.
 */
export function groupByPriority<T extends PrioritizedTarget>(targets: readonly T[]): PriorityGroup<T>[] {
  const byPriority = new Map<number, T[]>();
  for (const t of targets) {
    const group = byPriority.get(t.priority);
    if (group === undefined) byPriority.set(t.priority, [t]);
    else group.push(t);
  }
  return [...byPriority.entries()]
    .sort(([a], [b]) => a - b)
    .map(([priority, members]) => ({ priority, targets: members }));
}

/**
 * The best group that has at least one available target, reduced to its available targets (what
 * the balancer is built from), or undefined when no group has one (the proxy answers 503).
 *
 * A target of weight 0 does not count as available: in a blue/green pair (100/0) whose blue side
 * is down, the group would otherwise be "up" with nothing to send traffic to, and failover to the
 * next priority would never happen. Called when health changes, not per request.
 */
export function selectPriorityGroup<T extends PrioritizedTarget>(
  groups: readonly PriorityGroup<T>[],
  isAvailable: (target: T) => boolean,
): PriorityGroup<T> | undefined {
  for (const group of groups) {
    const available = group.targets.filter((t) => t.weight > 0 && isAvailable(t));
    if (available.length > 0) return { priority: group.priority, targets: available };
  }
  return undefined;
}

/** groupByPriority then selectPriorityGroup, for callers that do not keep the groups. */
export function bestPriorityGroup<T extends PrioritizedTarget>(
  targets: readonly T[],
  isAvailable: (target: T) => boolean,
): PriorityGroup<T> | undefined {
  return selectPriorityGroup(groupByPriority(targets), isAvailable);
}

/**
 * A configuration error that names the offending field by path (e.g.
 * `rules[2].traffic_split.rules[0].match[1].vars[0]`), so the API can answer INVALID_ARGUMENT and a
 * data plane can NACK with the same words. Shared by the control plane (validation at write time)
 * and the data plane (compiling a snapshot), so neither accepts what the other would refuse.
 */
export class ConfigError extends Error {
  constructor(
    /** Path of the field, snake_case as in the REST API. */
    readonly field: string,
    /** Why the value is refused. */
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = "ConfigError";
  }
}

/** One side of a duplicate route. */
export interface RouteOwner {
  readonly ruleId: string;
  readonly tenantId: string;
}

/**
 * Two rules claim the same (host, path, method). Carries both owners so the API can word the error
 * for the tenant writing (naming its own rule, but never another tenant's).
 */
export class DuplicateRouteError extends ConfigError {
  constructor(
    readonly existing: RouteOwner,
    readonly incoming: RouteOwner,
    /** What both match, e.g. "host * path /api/* GET". */
    readonly where: string,
  ) {
    super(`rule/${incoming.ruleId}.path`, `duplicate route: ${where} is already routed by rule ${existing.ruleId} (tenant ${existing.tenantId})`);
    this.name = "DuplicateRouteError";
  }
}

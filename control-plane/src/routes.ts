import type { ConnectRouter } from "@connectrpc/connect";
import { ConfigService } from "../../proto/gen/gateway/v1/config_service_pb.js";
import { DiscoveryService } from "../../proto/gen/gateway/v1/discovery_pb.js";
import type { ConfigServiceImpl } from "./config/connect-service.js";
import type { DiscoveryServer } from "./discovery/stream.js";
import { RolloutService } from "../../proto/gen/gateway/v1/rollout_pb.js";
import type { RolloutServiceImpl } from "./rollout/connect-service.js";

/** Registers the control plane's services; behaviour lives in the implementations. */
export function routes(config: ConfigServiceImpl, discovery: DiscoveryServer, rollouts?: RolloutServiceImpl) {
  return (router: ConnectRouter) => {
    router.service(ConfigService, config);
    router.service(DiscoveryService, discovery);
    if (rollouts !== undefined) router.service(RolloutService, rollouts);
  };
}

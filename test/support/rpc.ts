/**
 * RPC clients of the config API, each closed by the shared teardown before the processes stop:
 *
 * - {@link grpcConfigClient}: a plain gRPC client (@grpc/grpc-js) built at run time from
 *   proto/gateway/v1/config_service.proto with @grpc/proto-loader, as a user of another language's
 *   gRPC stack would, so it shares no generated code with the server;
 * - {@link connectConfigClient}: a Connect client (@connectrpc/connect-node) on HTTP/1.1 or HTTP/2,
 *   or gRPC-Web over HTTP/1.1.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport, Http2SessionManager } from "@connectrpc/connect-node";
import http from "node:http";
import path from "node:path";
import { ConfigService } from "../../proto/gen/gateway/v1/config_service_pb.js";
import { REPO_ROOT } from "./processes.js";
import { onTeardown } from "./teardown.js";

/** A gRPC ConfigService client with promisified methods (by RPC name, e.g. `CreateTenant`). */
export interface GrpcConfigClient {
  /** Calls an RPC with `authorization: Bearer <key>` metadata; the response has snake_case fields, 64-bit ints as strings. */
  call(method: string, request: Record<string, unknown>, key?: string): Promise<any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  close(): void;
}

/** The error of a failed gRPC call (`code` is a grpc.status). */
export type GrpcError = grpc.ServiceError;

/** A @grpc/grpc-js client of gateway.v1.ConfigService at `host:port`. */
export function grpcConfigClient(address: string): GrpcConfigClient {
  const def = protoLoader.loadSync(path.join(REPO_ROOT, "proto/gateway/v1/config_service.proto"), {
    includeDirs: [path.join(REPO_ROOT, "proto")],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const pkg = grpc.loadPackageDefinition(def) as any;
  const Ctor = pkg.gateway.v1.ConfigService as typeof grpc.Client;
  const client = new Ctor(address, grpc.credentials.createInsecure());
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    client.close();
  };
  onTeardown(close, "clients");
  return {
    call(method, request, key) {
      const md = new grpc.Metadata();
      if (key !== undefined) md.set("authorization", `Bearer ${key}`);
      return new Promise((resolve, reject) => {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const fn = (client as any)[method] as ((req: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void) | undefined;
        if (fn === undefined) return reject(new Error(`ConfigService has no method ${method}`));
        fn.call(client, request, md, (err, res) => (err ? reject(err) : resolve(res)));
      });
    },
    close,
  };
}

/** Connect-protocol (or gRPC-Web) client of ConfigService; its connections close at teardown. */
export function connectConfigClient(baseUrl: string, protocol: "connect-http1" | "connect-http2" | "grpc-web" = "connect-http1"): Client<typeof ConfigService> {
  if (protocol === "connect-http2") {
    const sessionManager = new Http2SessionManager(baseUrl);
    onTeardown(() => sessionManager.abort(), "clients");
    return createClient(ConfigService, createConnectTransport({ baseUrl, httpVersion: "2", sessionManager }));
  }
  // A private agent, so its keep-alive sockets are ours to close.
  const agent = new http.Agent({ keepAlive: true });
  onTeardown(() => agent.destroy(), "clients");
  const transport =
    protocol === "grpc-web"
      ? createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } })
      : createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } });
  return createClient(ConfigService, transport);
}

// The API clients: Connect-ES clients generated from proto/ (src/gen, made
// by `buf generate`), over gRPC-Web to the console's own origin, the same
// RPCs every other client calls. The interceptor adds the signed-in
// person's access token and refreshes it when the server says it expired.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ApiKeyService } from "../gen/chatbot/v1/api_key_service_pb";
import { AuditService } from "../gen/chatbot/v1/audit_service_pb";
import { AuthService } from "../gen/chatbot/v1/auth_service_pb";
import { ChatbotService } from "../gen/chatbot/v1/chatbot_service_pb";
import { OrganizationService } from "../gen/chatbot/v1/organization_service_pb";
import { UserService } from "../gen/chatbot/v1/user_service_pb";
import * as session from "./session";

// RPCs that take no access token: sending one would be harmless, but a
// refresh must not wait on itself.
const PUBLIC = new Set(["Login", "RefreshToken", "VerifyApiKey"]);

const withAccessToken: Interceptor = (next) => async (request) => {
  if (PUBLIC.has(request.method.name)) return next(request);
  const token = await session.accessToken();
  if (!token) return next(request);
  request.header.set("authorization", `Bearer ${token}`);
  try {
    return await next(request);
  } catch (error) {
    // The token expired (or was revoked) between our check and the
    // server's: refresh once and send the same unary call again.
    if (request.stream || ConnectError.from(error).code !== Code.Unauthenticated) throw error;
    const renewed = await session.replaceRejected(token);
    if (!renewed) throw error;
    request.header.set("authorization", `Bearer ${renewed}`);
    return next(request);
  }
};

const baseUrl = window.location.origin;

// Binary protobuf, as gRPC-Web servers (tonic-web) expect.
const transport = createGrpcWebTransport({
  baseUrl,
  useBinaryFormat: true,
  interceptors: [withAccessToken],
  defaultTimeoutMs: 30_000,
});

export const api = {
  auth: createClient(AuthService, transport),
  users: createClient(UserService, transport),
  chatbots: createClient(ChatbotService, transport),
  keys: createClient(ApiKeyService, transport),
  orgs: createClient(OrganizationService, transport),
  audit: createClient(AuditService, transport),
};

session.setRefresher((refreshToken) => api.auth.refreshToken({ refreshToken }));

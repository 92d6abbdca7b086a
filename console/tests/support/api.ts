// The API from the tests' side, in Node: the same generated clients over
// @connectrpc/connect-web's gRPC-Web transport (Node's fetch), for what a
// test checks or prepares behind the page's back (VerifyApiKey, a refused
// call with a viewer's token, many rows to page through).

import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ApiKeyService } from "../../src/gen/chatbot/v1/api_key_service_pb";
import { AuditService } from "../../src/gen/chatbot/v1/audit_service_pb";
import { AuthService } from "../../src/gen/chatbot/v1/auth_service_pb";
import { ChatbotService } from "../../src/gen/chatbot/v1/chatbot_service_pb";
import { OrganizationService } from "../../src/gen/chatbot/v1/organization_service_pb";
import { UserService } from "../../src/gen/chatbot/v1/user_service_pb";

export interface Api {
  auth: Client<typeof AuthService>;
  users: Client<typeof UserService>;
  chatbots: Client<typeof ChatbotService>;
  keys: Client<typeof ApiKeyService>;
  orgs: Client<typeof OrganizationService>;
  audit: Client<typeof AuditService>;
}

/** Clients calling `baseUrl`, with `token` as the bearer when given. */
export function apiAt(baseUrl: string, token?: string): Api {
  const bearer: Interceptor = (next) => (request) => {
    if (token) request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  const transport = createGrpcWebTransport({ baseUrl, useBinaryFormat: true, interceptors: [bearer] });
  return {
    auth: createClient(AuthService, transport),
    users: createClient(UserService, transport),
    chatbots: createClient(ChatbotService, transport),
    keys: createClient(ApiKeyService, transport),
    orgs: createClient(OrganizationService, transport),
    audit: createClient(AuditService, transport),
  };
}

/** Signs in from the test (not the page) and answers clients with that token. */
export async function signedInApi(baseUrl: string, email: string, password: string): Promise<Api> {
  const { accessToken } = await apiAt(baseUrl).auth.login({ email, password });
  return apiAt(baseUrl, accessToken);
}

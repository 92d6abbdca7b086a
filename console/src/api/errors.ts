// What went wrong, as the API said it: the status code, the server's
// message, the field violations of INVALID_ARGUMENT (google.rpc.BadRequest)
// and the retry delay of RESOURCE_EXHAUSTED (google.rpc.RetryInfo).

import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, RetryInfoSchema } from "../gen/google/rpc/error_details_pb";

export interface Violation {
  /** The request's field path as the server names it, e.g. "llm_endpoint_url"
   * or "api_key.rate_limit.window". */
  field: string;
  description: string;
}

export interface Problem {
  code: Code;
  /** Short, for a heading: "Permission denied". */
  title: string;
  /** The server's message. */
  message: string;
  violations: Violation[];
  /** Seconds to wait before retrying, when the server said. */
  retryAfter?: number;
}

const TITLES: Partial<Record<Code, string>> = {
  [Code.InvalidArgument]: "Invalid input",
  [Code.PermissionDenied]: "Permission denied",
  [Code.Unauthenticated]: "Not signed in",
  [Code.NotFound]: "Not found",
  [Code.AlreadyExists]: "Already exists",
  [Code.FailedPrecondition]: "Not possible now",
  [Code.Aborted]: "Changed meanwhile",
  [Code.ResourceExhausted]: "Too many requests",
  [Code.Unavailable]: "Service unavailable",
  [Code.DeadlineExceeded]: "Timed out",
  [Code.Internal]: "Server error",
};

export function problemOf(error: unknown): Problem {
  // Not an answer of the API (those arrive as ConnectError, outages too):
  // a bug in the page, shown as an error but also logged for whoever
  // debugs it (and for the end-to-end tests, which fail on it).
  if (!(error instanceof ConnectError)) console.error(error);
  const err = ConnectError.from(error);
  const violations: Violation[] = [];
  for (const detail of err.findDetails(BadRequestSchema)) {
    for (const v of detail.fieldViolations) {
      violations.push({ field: v.field, description: v.description });
    }
  }
  let retryAfter: number | undefined;
  const [retry] = err.findDetails(RetryInfoSchema);
  if (retry?.retryDelay) {
    retryAfter = Math.max(1, Math.ceil(Number(retry.retryDelay.seconds) + retry.retryDelay.nanos / 1e9));
  }
  return {
    code: err.code,
    title: TITLES[err.code] ?? Code[err.code] ?? "Error",
    message: err.rawMessage || "The request failed.",
    violations,
    retryAfter,
  };
}

/** A violation found before asking the server, shown the same way. */
export function localViolation(field: string, description: string): Problem {
  return { code: Code.InvalidArgument, title: TITLES[Code.InvalidArgument]!, message: "", violations: [{ field, description }] };
}

/** Violations placed on a form's inputs, and those the form has no input
 * for (shown at its top). */
export interface Placed {
  byInput: Map<string, string[]>;
  unplaced: Violation[];
}

/**
 * Places each violation on the form input it names. `inputs` are the field
 * paths the form has inputs for, relative to the request message or to the
 * resource it wraps (`prefixes`, e.g. "api_key" for UpdateApiKey's
 * "api_key.rate_limit.limit"). A violation of a whole message
 * ("rate_limit") goes to its first input; one of a part the form shows as
 * one input ("credits.refill.interval.seconds") to that input.
 */
export function place(violations: Violation[], inputs: readonly string[], prefixes: readonly string[] = []): Placed {
  const byInput = new Map<string, string[]>();
  const unplaced: Violation[] = [];
  for (const v of violations) {
    let path = v.field;
    for (const prefix of prefixes) {
      if (path.startsWith(`${prefix}.`)) {
        path = path.slice(prefix.length + 1);
        break;
      }
    }
    const input =
      inputs.find((i) => i === path) ??
      inputs.find((i) => i.startsWith(`${path}.`)) ??
      longestPrefixOf(path, inputs);
    if (input === undefined) {
      unplaced.push(v);
    } else {
      byInput.set(input, [...(byInput.get(input) ?? []), v.description]);
    }
  }
  return { byInput, unplaced };
}

function longestPrefixOf(path: string, inputs: readonly string[]): string | undefined {
  let best: string | undefined;
  for (const i of inputs) {
    if (path.startsWith(`${i}.`) && (!best || i.length > best.length)) best = i;
  }
  return best;
}

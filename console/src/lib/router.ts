// Hash routing: the page is one document, so a route needs no server
// support, and the hash never carries anything secret (ids only).

import { useEffect, useState } from "preact/hooks";

export type Route =
  | { name: "signin" }
  | { name: "signup" }
  | { name: "chatbots" }
  | { name: "chatbot"; id: string }
  | { name: "key"; chatbotId: string; id: bigint }
  | { name: "audit" }
  | { name: "members" }
  | { name: "organizations" }
  | { name: "notfound" };

export function parse(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const [first, second, third, fourth] = parts;
  switch (first) {
    case undefined:
    case "chatbots":
      if (second === undefined) return { name: "chatbots" };
      if (third === undefined) return { name: "chatbot", id: second };
      if (third === "keys" && fourth !== undefined && /^\d+$/.test(fourth)) {
        return { name: "key", chatbotId: second, id: BigInt(fourth) };
      }
      return { name: "notfound" };
    case "signin":
    case "signup":
    case "audit":
    case "members":
    case "organizations":
      return parts.length === 1 ? { name: first } : { name: "notfound" };
    default:
      return { name: "notfound" };
  }
}

export function href(route: Route): string {
  switch (route.name) {
    case "chatbot":
      return `#/chatbots/${encodeURIComponent(route.id)}`;
    case "key":
      return `#/chatbots/${encodeURIComponent(route.chatbotId)}/keys/${route.id}`;
    case "notfound":
      return "#/chatbots";
    default:
      return `#/${route.name}`;
  }
}

export function navigate(route: Route): void {
  const target = href(route);
  if (window.location.hash !== target) window.location.hash = target;
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(window.location.hash));
  useEffect(() => {
    const update = () => setRoute(parse(window.location.hash));
    window.addEventListener("hashchange", update);
    return () => window.removeEventListener("hashchange", update);
  }, []);
  return route;
}

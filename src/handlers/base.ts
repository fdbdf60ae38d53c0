import type { AppContext } from "../context";

/** `GET /v2/`: tells clients that this is a registry of API version 2. */
export function check(c: AppContext): Response {
  return c.json({});
}

import type { AppContext } from "../context";

/** `GET /v2/`: confirms to clients that this registry implements API version 2. */
export function check(c: AppContext): Response {
  return c.json({});
}

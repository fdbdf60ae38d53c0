import type { MiddlewareHandler } from "hono";
import { z } from "zod";
import type { AppContext, AppEnv } from "../context";
import { RegistryError } from "../errors";
import { requireAdministrator } from "./access";

/** Names of users, groups and permission targets: lowercase, starting with a letter or digit, at most 64 characters. */
export const resourceNamePattern = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** Builds the zod schema of a user, group or permission target name. */
export function resourceName(kind: string) {
  return z
    .string()
    .regex(resourceNamePattern, `${kind} name must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit`);
}

/** Maximum password length in characters, which bounds the input that one request makes PBKDF2 hash. */
export const maxPasswordLength = 1024;
/** Minimum length of a new password in characters. */
export const minPasswordLength = 12;

export const newPasswordSchema = z
  .string()
  .min(minPasswordLength, `password must be at least ${minPasswordLength} characters long`)
  .max(maxPasswordLength, `password must be at most ${maxPasswordLength} characters long`);

/** Middleware that throws DENIED unless the authenticated caller is an administrator. */
export const administratorsOnly: MiddlewareHandler<AppEnv> = async (c, next) => {
  requireAdministrator(c);
  await next();
};

/** Reads the JSON request body and validates it, throwing INVALID_REQUEST with zod's issues. */
export async function parseJsonBody<Schema extends z.ZodType>(c: AppContext, schema: Schema, inputName: string): Promise<z.output<Schema>> {
  let body: unknown;
  try {
    body = await c.req.raw.json();
  } catch {
    throw new RegistryError("INVALID_REQUEST", "request body must be JSON");
  }
  return validate(schema, body, inputName);
}

/** Validates the query parameters, each taken once, throwing INVALID_REQUEST with zod's issues. */
export function parseQuery<Schema extends z.ZodType>(c: AppContext, schema: Schema, inputName: string): z.output<Schema> {
  const url = new URL(c.req.url);
  const repeated = [...new Set([...url.searchParams.keys()].filter((key) => url.searchParams.getAll(key).length > 1))];
  if (repeated.length > 0) {
    const issues = repeated.map((key) => ({ path: key, message: `query parameter '${key}' must be given at most once` }));
    throw new RegistryError("INVALID_REQUEST", `${inputName} is invalid`, { issues });
  }
  return validate(schema, Object.fromEntries(url.searchParams), inputName);
}

/** Validates a value that was already read, throwing INVALID_REQUEST with zod's issues. */
export function validate<Schema extends z.ZodType>(schema: Schema, value: unknown, inputName: string): z.output<Schema> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;

  const issues = parsed.error.issues.map((issue) => ({ path: issue.path.join("."), message: issue.message }));
  throw new RegistryError("INVALID_REQUEST", `${inputName} is invalid`, { issues });
}

/** Throws the 405 UNSUPPORTED error with the Allow header of the route. */
export function rejectMethod(method: string, allowed: string): never {
  throw new RegistryError("UNSUPPORTED", `method ${method} is not allowed on this endpoint; allowed: ${allowed}`, null, { Allow: allowed });
}

/**
 * Returns whether a D1 error is a failed UNIQUE or CHECK constraint that
 * mentions `column`. D1 reports constraint failures only as message text,
 * such as "UNIQUE constraint failed: users.name: SQLITE_CONSTRAINT".
 */
export function isConstraintFailure(error: unknown, kind: "UNIQUE" | "CHECK", column: string): boolean {
  if (!(error instanceof Error)) return false;
  return error.message.includes(`${kind} constraint failed`) && error.message.includes(column);
}

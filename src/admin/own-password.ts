import { z } from "zod";
import { audit, clientAddress } from "../auth/audit";
import { hashPassword, verifyPassword } from "../auth/passwords";
import { loginKeys, recordFailedLogin } from "../auth/rate-limit";
import { findUserByName, storedPassword } from "../auth/users";
import type { AppContext } from "../context";
import { RegistryError } from "../errors";
import { maxPasswordLength, newPasswordSchema, parseJsonBody } from "./shared";

const changePasswordSchema = z
  .strictObject({
    currentPassword: z.string().min(1, "currentPassword is required").max(maxPasswordLength),
    newPassword: newPasswordSchema,
  })
  .refine((body) => body.currentPassword !== body.newPassword, {
    message: "newPassword must differ from currentPassword",
    path: ["newPassword"],
  });

/**
 * `PUT /api/v1/users/me/password`: the caller changes their own password.
 * Only a request authenticated with a password may do this, so a leaked
 * access token cannot take over the account. A wrong current password
 * counts as a failed login against the user and the client address.
 */
export async function changeOwnPassword(c: AppContext): Promise<Response> {
  const principal = c.get("principal");
  if (principal.via !== "password") {
    throw new RegistryError("DENIED", "changing a password requires Basic authentication with the user's password, not a token");
  }
  const body = await parseJsonBody(c, changePasswordSchema, "password change");

  // Authentication has already rejected the request with TOOMANYREQUESTS if these keys reached the limit.
  const keys = loginKeys(principal.name, clientAddress(c));
  const user = await findUserByName(c.env.DB, principal.name);
  const stored = user ? storedPassword(user) : null;
  if (!user || !stored) throw new RegistryError("DENIED", `user '${principal.name}' has no password to change`);
  if (!(await verifyPassword(body.currentPassword, stored))) {
    await recordFailedLogin(c.env.DB, keys);
    await audit(c, "user.password.failed", principal.name);
    throw new RegistryError("UNAUTHORIZED", "currentPassword does not match the user's password");
  }

  // Matching the old hash makes a concurrent change of the same password fail instead of being lost.
  const password = await hashPassword(body.newPassword);
  const result = await c.env.DB.prepare(
    `UPDATE users SET password_hash = ?, password_salt = ?, password_iterations = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
      WHERE id = ? AND password_hash = ?`,
  )
    .bind(password.hash, password.salt, password.iterations, user.id, stored.hash)
    .run();
  if (result.meta.changes === 0) throw new RegistryError("CONFLICT", "the password changed during this request; retry with the new one");

  await audit(c, "user.password.change", principal.name);
  return c.body(null, 204);
}

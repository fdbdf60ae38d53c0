import { Hono } from "hono";
import { z } from "zod";
import { audit } from "../auth/audit";
import { findIssuerByName, listIssuers, type OidcRule } from "../auth/oidc";
import type { AppContext, AppEnv } from "../context";
import { RegistryError } from "../errors";
import { requireUser } from "./access";
import { administratorsOnly, isConstraintFailure, parseJsonBody, rejectMethod, resourceName } from "./shared";

/** The maximum number of rules of one issuer, which each login checks in order. */
const maxRules = 100;
/** The maximum number of claims that one rule compares. */
const maxClaimsPerRule = 20;

// NOTE: http URLs are accepted so that tests can run an issuer on loopback.
// A key set fetched over http can be replaced in transit, so production issuers need https.
const httpUrl = (field: string) =>
  z
    .url({ protocol: /^https?$/, error: `${field} must be an http or https URL` })
    .max(2048, `${field} must be at most 2048 characters long`);

const ruleSchema = z
  .strictObject({
    claims: z
      .record(
        z.string().min(1, "claim names must not be empty").max(128, "claim names must be at most 128 characters long"),
        z.string().min(1, "claim values must not be empty").max(1024, "claim values must be at most 1024 characters long"),
      )
      .refine((claims) => Object.keys(claims).length > 0, "claims must name at least one claim")
      .refine((claims) => Object.keys(claims).length <= maxClaimsPerRule, `claims may name at most ${maxClaimsPerRule} claims`)
      .refine(
        (claims) => Object.values(claims).some((value) => value !== "*"),
        "at least one claim must have a value other than '*', or the rule would accept every token of the issuer",
      ),
    user: resourceName("user").optional(),
    group: resourceName("group").optional(),
  })
  .refine((rule) => (rule.user === undefined) !== (rule.group === undefined), "a rule must name exactly one of user and group");

const createIssuerSchema = z.strictObject({
  name: resourceName("issuer"),
  issuer: httpUrl("issuer"),
  audience: z.string().min(1, "audience must not be empty").max(512, "audience must be at most 512 characters long"),
  jwksUrl: httpUrl("jwksUrl"),
  rules: z.array(ruleSchema).min(1, "rules must contain at least one rule").max(maxRules, `rules may contain at most ${maxRules} rules`),
});

/**
 * JSON admin API for trusted OpenID Connect issuers under
 * `/api/v1/oidc/issuers`, for administrators only. An ID token from a
 * configured issuer can be exchanged at `/v2/token` for a registry token of
 * the user or group that the first matching rule names.
 */
export const oidcIssuerAdmin = new Hono<AppEnv>();

oidcIssuerAdmin.use(requireUser, administratorsOnly);

oidcIssuerAdmin.get("/", async (c) => {
  return c.json({ issuers: await listIssuers(c.env.DB) });
});

oidcIssuerAdmin.post("/", async (c) => {
  const body = await parseJsonBody(c, createIssuerSchema, "OIDC issuer definition");
  const rules: OidcRule[] = body.rules.map((rule) =>
    rule.user !== undefined ? { claims: rule.claims, user: rule.user } : { claims: rule.claims, group: rule.group! },
  );
  await requireKnownPrincipals(c, rules);

  try {
    await c.env.DB.prepare("INSERT INTO oidc_issuers (name, issuer, audience, jwks_url, rules) VALUES (?, ?, ?, ?, ?)")
      .bind(body.name, body.issuer, body.audience, body.jwksUrl, JSON.stringify(rules))
      .run();
  } catch (error) {
    if (isConstraintFailure(error, "UNIQUE", "oidc_issuers.name")) {
      throw new RegistryError("CONFLICT", `OIDC issuer '${body.name}' already exists`, { name: body.name });
    }
    if (isConstraintFailure(error, "UNIQUE", "oidc_issuers.issuer")) {
      throw new RegistryError("CONFLICT", `issuer URL ${body.issuer} is configured already under another name`, { issuer: body.issuer });
    }
    throw error;
  }

  await audit(c, "oidc-issuer.create", body.name, { issuer: body.issuer, audience: body.audience, jwksUrl: body.jwksUrl, rules });
  const created = await findIssuerByName(c.env.DB, body.name);
  return c.json(created, 201, { Location: `/api/v1/oidc/issuers/${body.name}` });
});

oidcIssuerAdmin.get("/:name", async (c) => {
  const issuer = await findIssuerByName(c.env.DB, c.req.param("name"));
  if (!issuer) throw issuerNotFound(c.req.param("name"));
  return c.json(issuer);
});

/** Deletes the issuer. Registry tokens already exchanged stay valid until they expire. */
oidcIssuerAdmin.delete("/:name", async (c) => {
  const name = c.req.param("name");
  const result = await c.env.DB.prepare("DELETE FROM oidc_issuers WHERE name = ?").bind(name).run();
  if (result.meta.changes === 0) throw issuerNotFound(name);
  await audit(c, "oidc-issuer.delete", name);
  return c.body(null, 204);
});

// Registered last, so these only run for methods that no route above handles.
oidcIssuerAdmin.all("/", (c) => rejectMethod(c.req.method, "GET, HEAD, POST"));
oidcIssuerAdmin.all("/:name", (c) => rejectMethod(c.req.method, "GET, HEAD, DELETE"));

/** Throws INVALID_REQUEST when a rule names a user or group that does not exist. */
async function requireKnownPrincipals(c: AppContext, rules: OidcRule[]): Promise<void> {
  const issues: { path: string; message: string }[] = [];
  for (const [index, rule] of rules.entries()) {
    const kind = rule.user !== undefined ? "user" : "group";
    const name = rule.user ?? rule.group!;
    const table = kind === "user" ? "users" : "groups";
    const row = await c.env.DB.prepare(`SELECT 1 AS found FROM ${table} WHERE name = ?`).bind(name).first();
    if (!row) issues.push({ path: `rules.${index}.${kind}`, message: `${kind} '${name}' does not exist` });
  }
  if (issues.length > 0) throw new RegistryError("INVALID_REQUEST", "OIDC issuer definition is invalid", { issues });
}

function issuerNotFound(name: string): RegistryError {
  return new RegistryError("NOT_FOUND", `OIDC issuer '${name}' does not exist`, { name });
}

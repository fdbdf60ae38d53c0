import { importJWK, SignJWT, type CryptoKey, type JWK, type JWTPayload } from "jose";
import { expect, inject } from "vitest";
import "../oidc-issuer/types";
import { adminRequest } from "./admin-helpers";

/** The test OpenID Connect issuer that test/oidc-issuer/global-setup.ts runs on 127.0.0.1. */
export const testIssuer = inject("oidcIssuer");

/** The audience that the tests configure and put in their ID tokens. */
export const testAudience = "edge-registry-tests";

/** Claims shaped like a GitHub Actions ID token of a push to main. */
export const ciClaims = {
  sub: "repo:acme/app:ref:refs/heads/main",
  repository: "acme/app",
  repository_owner: "acme",
  ref: "refs/heads/main",
  workflow: "release",
};

export interface MintOptions {
  alg?: "RS256" | "ES256";
  /** Signs with this key in place of the issuer's key of `alg`. */
  key?: CryptoKey;
  /** Seconds from now of `exp`; 300 when unset. Negative values mint an expired token. */
  expiresIn?: number;
  /** Seconds from now of `nbf` and `iat`; 0 when unset. */
  notBefore?: number;
}

/**
 * Signs an ID token as the test issuer: `iss` is the issuer URL, `aud` the
 * test audience, then `ciClaims`, all of which `claims` overrides. A claim
 * set to undefined in `claims` is left out.
 */
export async function mintIdToken(claims: JWTPayload = {}, options: MintOptions = {}): Promise<string> {
  const alg = options.alg ?? "RS256";
  const jwk = alg === "RS256" ? testIssuer.keys.rs256 : testIssuer.keys.es256;
  const key = options.key ?? ((await importJWK(jwk, alg)) as CryptoKey);
  const now = Math.floor(Date.now() / 1000);
  const notBefore = now + (options.notBefore ?? 0);

  const payload: JWTPayload = {
    iss: testIssuer.issuer,
    aud: testAudience,
    iat: notBefore,
    nbf: notBefore,
    exp: now + (options.expiresIn ?? 300),
    ...ciClaims,
    ...claims,
  };
  for (const [name, value] of Object.entries(payload)) if (value === undefined) delete payload[name];
  return new SignJWT(payload).setProtectedHeader({ alg, kid: (jwk as JWK).kid, typ: "JWT" }).sign(key);
}

/** Configures an OIDC issuer through the admin API and fails the test unless it returns 201. */
export async function configureIssuer(body: Record<string, unknown>): Promise<void> {
  const response = await adminRequest("POST", "/api/v1/oidc/issuers", body);
  expect(response.status, `configuring OIDC issuer: ${await response.clone().text()}`).toBe(201);
}

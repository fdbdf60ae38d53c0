import { calculateJwkThumbprint, exportJWK, importJWK, importPKCS8, jwtVerify, SignJWT, type CryptoKey, type JWTPayload } from "jose";
import { RegistryError } from "../errors";
import type { TokenScope } from "./permissions";
import type { RequestedScope } from "./scopes";

/** Registry tokens are signed with ECDSA P-256 and SHA-256; no other algorithm is accepted. */
const algorithm = "ES256";

/** Seconds a registry token stays valid. */
export const tokenLifetimeSeconds = 300;

/** The claims of a registry token beyond the registered ones. */
export interface RegistryTokenClaims extends JWTPayload {
  /** The Docker token grants: repository names with their granted actions. */
  access: RequestedScope[];
  /** The scope of the access token the subject logged in with, which keeps narrowing the subject's permissions. */
  token_scope?: TokenScope;
  /** The group of an OpenID Connect principal that a rule maps to a group; the subject is then no user name. */
  oidc_group?: string;
}

interface SigningKeys {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  keyId: string;
}

let cachedKeys: { pem: string; keys: Promise<SigningKeys> } | null = null;

/**
 * Imports the PKCS#8 PEM of the `TOKEN_SIGNING_KEY` secret once per isolate.
 * Throws UNAVAILABLE when the secret is not set, so no token is ever signed
 * or accepted without it.
 */
export function signingKeys(pem: string | undefined): Promise<SigningKeys> {
  if (!pem) {
    throw new RegistryError("UNAVAILABLE", "token signing is not configured: set the TOKEN_SIGNING_KEY secret to a PKCS#8 PEM P-256 key");
  }
  if (cachedKeys?.pem !== pem) cachedKeys = { pem, keys: importKeys(pem) };
  return cachedKeys.keys;
}

async function importKeys(pem: string): Promise<SigningKeys> {
  const privateKey = await importPKCS8(pem, algorithm, { extractable: true });
  const { d: _private, ...publicJwk } = await exportJWK(privateKey);
  const publicKey = (await importJWK(publicJwk, algorithm)) as CryptoKey;
  return { privateKey, publicKey, keyId: await calculateJwkThumbprint(publicJwk) };
}

export interface TokenRequest {
  issuer: string;
  audience: string;
  subject: string;
  access: RequestedScope[];
  /** Claims that let bearer requests rebuild the subject's principal with no more rights than its login had. */
  principal?: Pick<RegistryTokenClaims, "token_scope" | "oidc_group">;
}

/** Signs a registry token for a subject with the granted access. */
export async function signRegistryToken(keys: SigningKeys, request: TokenRequest, now = Date.now()): Promise<string> {
  const issuedAt = Math.floor(now / 1000);
  return new SignJWT({ access: request.access, ...request.principal })
    .setProtectedHeader({ alg: algorithm, kid: keys.keyId, typ: "JWT" })
    .setIssuer(request.issuer)
    .setAudience(request.audience)
    .setSubject(request.subject)
    .setIssuedAt(issuedAt)
    .setNotBefore(issuedAt)
    .setExpirationTime(issuedAt + tokenLifetimeSeconds)
    .setJti(crypto.randomUUID())
    .sign(keys.privateKey);
}

/**
 * Verifies a registry token's signature, algorithm, issuer, audience, expiry
 * and not-before time. Returns null for any token that fails, so callers
 * treat it like missing credentials.
 */
export async function verifyRegistryToken(
  keys: SigningKeys,
  token: string,
  issuer: string,
  audience: string,
): Promise<RegistryTokenClaims | null> {
  try {
    const { payload } = await jwtVerify<RegistryTokenClaims>(token, keys.publicKey, {
      algorithms: [algorithm],
      issuer,
      audience,
      requiredClaims: ["exp", "nbf", "sub", "iat"],
    });
    if (!Array.isArray(payload.access)) return null;
    return payload;
  } catch {
    return null;
  }
}

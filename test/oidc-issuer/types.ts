import type { JWK } from "jose";

/** What the test OpenID Connect issuer passes to tests: its URLs and private signing keys. */
export interface TestIssuerInfo {
  /** The issuer URL, which is also the `iss` claim of its ID tokens, such as http://127.0.0.1:41234. */
  issuer: string;
  /** The URL of its JSON Web Key Set, which contains the public halves of `keys`. */
  jwksUrl: string;
  /** Private JWKs with `kid` and `alg`: one RS256 and one ES256 key. */
  keys: { rs256: JWK; es256: JWK };
  /**
   * A second key set on the same server, with keys of the same `kid`s whose
   * private halves no test has, for an issuer that `keys` must not sign for.
   */
  otherJwksUrl: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    oidcIssuer: TestIssuerInfo;
  }
}

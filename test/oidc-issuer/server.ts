import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, type JWK } from "jose";
import type { TestIssuerInfo } from "./types.ts";

/**
 * A stand-in OpenID Connect issuer for tests, listening on 127.0.0.1. It
 * generates one RS256 and one ES256 key and serves their public halves at
 * `/.well-known/jwks.json`; tests sign ID tokens with the private keys in
 * `info`. A second key set at `/other/.well-known/jwks.json` has keys with
 * the same `kid`s, whose private halves the server discards.
 */
export class TestIssuer {
  readonly info: TestIssuerInfo;
  readonly #server: Server;

  private constructor(server: Server, info: TestIssuerInfo) {
    this.#server = server;
    this.info = info;
  }

  /** Generates the keys and starts the server on a free port. */
  static async start(): Promise<TestIssuer> {
    const keys = { rs256: await privateJwk("RS256"), es256: await privateJwk("ES256") };
    const publicKeys = [publicJwk(keys.rs256), publicJwk(keys.es256)];
    const otherPublicKeys = [publicJwk(await privateJwk("RS256")), publicJwk(await privateJwk("ES256"))];

    const server = createServer((request, response) => {
      const path = new URL(request.url ?? "/", "http://127.0.0.1").pathname;
      if (request.method === "GET" && path === "/.well-known/jwks.json") {
        sendJson(response, 200, { keys: publicKeys });
      } else if (request.method === "GET" && path === "/other/.well-known/jwks.json") {
        sendJson(response, 200, { keys: otherPublicKeys });
      } else {
        sendJson(response, 404, { error: `no test issuer endpoint at ${request.method} ${path}` });
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", resolve);
    });

    const { port } = server.address() as AddressInfo;
    const url = `http://127.0.0.1:${port}`;
    return new TestIssuer(server, {
      issuer: url,
      jwksUrl: `${url}/.well-known/jwks.json`,
      keys,
      otherJwksUrl: `${url}/other/.well-known/jwks.json`,
    });
  }

  /** Stops the server and closes its open connections. */
  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve, reject) => this.#server.close((error) => (error ? reject(error) : resolve())));
  }
}

async function privateJwk(alg: "RS256" | "ES256"): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  return { ...(await exportJWK(privateKey)), alg, kid: `test-${alg.toLowerCase()}`, use: "sig" };
}

/** Drops the private members of an RSA or EC JWK. */
function publicJwk(jwk: JWK): JWK {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...rest } = jwk;
  return rest;
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "Content-Type": "application/json" });
  response.end(JSON.stringify(body));
}

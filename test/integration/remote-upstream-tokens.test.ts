import { describe, expect, it } from "vitest";
import { mayReceiveCredentials } from "../../src/remote/upstream-client";
import { parseWwwAuthenticate, type Challenge } from "../../src/remote/www-authenticate";
import { registryFetch } from "./helpers";
import {
  createRemoteRepository,
  setUpstreamBehaviour,
  uniqueUpstreamPath,
  upstream,
  upstreamCounts,
  upstreamTokenCount,
} from "./remote-helpers";

function plain(challenges: Challenge[]): { scheme: string; parameters: Record<string, string> }[] {
  return challenges.map((challenge) => ({ scheme: challenge.scheme, parameters: Object.fromEntries(challenge.parameters) }));
}

/** Fetches `path` of a remote repository and fails the test unless it returns 200. */
async function pull(key: string, path: string): Promise<void> {
  const response = await registryFetch(`/v2/${key}/${path}`);
  expect(response.status, `GET /v2/${key}/${path}`).toBe(200);
  await response.arrayBuffer();
}

describe("WWW-Authenticate parsing", () => {
  it("reads a Bearer challenge", () => {
    const challenges = parseWwwAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io"');

    expect(plain(challenges)).toEqual([
      { scheme: "bearer", parameters: { realm: "https://auth.docker.io/token", service: "registry.docker.io" } },
    ]);
  });

  it("keeps commas inside quoted values", () => {
    const challenges = parseWwwAuthenticate('Bearer realm="https://a.test/token",scope="repository:a:pull,push"');

    expect(challenges[0]?.parameters.get("scope")).toBe("repository:a:pull,push");
  });

  it("reads several challenges", () => {
    const challenges = parseWwwAuthenticate('Basic realm="a, b", BEARER realm="https://a.test/token", service=registry');

    expect(plain(challenges)).toEqual([
      { scheme: "basic", parameters: { realm: "a, b" } },
      { scheme: "bearer", parameters: { realm: "https://a.test/token", service: "registry" } },
    ]);
  });

  it("lowercases scheme and parameter names", () => {
    const challenges = parseWwwAuthenticate('bEaReR Realm="https://a.test/token"');

    expect(plain(challenges)).toEqual([{ scheme: "bearer", parameters: { realm: "https://a.test/token" } }]);
  });

  it("unescapes quoted pairs", () => {
    const challenges = parseWwwAuthenticate('Basic realm="say \\"hi\\" \\\\ there"');

    expect(challenges[0]?.parameters.get("realm")).toBe('say "hi" \\ there');
  });

  it("reads a scheme without parameters", () => {
    const challenges = parseWwwAuthenticate("Negotiate, Basic realm=x");

    expect(plain(challenges)).toEqual([
      { scheme: "negotiate", parameters: {} },
      { scheme: "basic", parameters: { realm: "x" } },
    ]);
  });

  it("skips a token68", () => {
    const challenges = parseWwwAuthenticate("Negotiate a87421000492aa874209af8bc028==, Basic realm=x");

    expect(plain(challenges).map((challenge) => challenge.scheme)).toEqual(["negotiate", "basic"]);
  });

  it("returns nothing for an empty header", () => {
    expect(parseWwwAuthenticate(null)).toEqual([]);
    expect(parseWwwAuthenticate("")).toEqual([]);
  });

  it("stops at a syntax error", () => {
    const challenges = parseWwwAuthenticate('Bearer realm="https://a.test/token" junk="x');

    expect(plain(challenges)).toEqual([{ scheme: "bearer", parameters: { realm: "https://a.test/token" } }]);
  });
});

describe("token realm credentials rule", () => {
  const upstreamUrl = new URL("http://127.0.0.1:5000");

  it("allows the upstream's own origin", () => {
    expect(mayReceiveCredentials(new URL("http://127.0.0.1:5000/token"), upstreamUrl)).toBe(true);
  });

  it("allows https elsewhere", () => {
    expect(mayReceiveCredentials(new URL("https://auth.docker.io/token"), upstreamUrl)).toBe(true);
  });

  it("rejects http on another port", () => {
    expect(mayReceiveCredentials(new URL("http://127.0.0.1:5001/token"), upstreamUrl)).toBe(false);
  });

  it("rejects http on another host", () => {
    expect(mayReceiveCredentials(new URL("http://auth.test/token"), new URL("https://registry.test"))).toBe(false);
  });
});

describe("upstream token cache", () => {
  it("reuses a token across requests", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath("private-");

    await pull(key, `${path}/manifests/latest`);
    await pull(key, `${path}/blobs/${upstream.configDigest}`);
    await pull(key, `${path}/blobs/${upstream.layerDigest}`);

    expect(await upstreamTokenCount(path)).toBe(1);
    expect(await upstreamCounts(path)).toEqual({
      [`${path}/manifests/latest`]: 2,
      [`${path}/blobs/${upstream.configDigest}`]: 1,
      [`${path}/blobs/${upstream.layerDigest}`]: 1,
    });
  });

  it("reuses a token with credentials", async () => {
    const key = await createRemoteRepository({ username: upstream.username, password: upstream.password });
    const path = uniqueUpstreamPath("login-");

    await pull(key, `${path}/manifests/latest`);
    await pull(key, `${path}/blobs/${upstream.configDigest}`);

    expect(await upstreamTokenCount(path)).toBe(1);
  });

  it("keeps tokens apart per credentials", async () => {
    const anonymous = await createRemoteRepository();
    const withCredentials = await createRemoteRepository({ username: upstream.username, password: upstream.password });
    const path = uniqueUpstreamPath("private-");

    await pull(anonymous, `${path}/manifests/latest`);
    await pull(withCredentials, `${path}/manifests/latest`);

    expect(await upstreamTokenCount(path)).toBe(2);
  });

  it("fetches again after expiry", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath("private-");
    await setUpstreamBehaviour(path, { tokenExpiresIn: 300, tokenIssuedSecondsAgo: 3600 });

    await pull(key, `${path}/manifests/latest`);
    await pull(key, `${path}/blobs/${upstream.configDigest}`);

    expect(await upstreamTokenCount(path)).toBe(2);
  });

  it("does not cache a token shorter than the margin", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath("private-");
    await setUpstreamBehaviour(path, { tokenExpiresIn: 5 });

    await pull(key, `${path}/manifests/latest`);
    await pull(key, `${path}/blobs/${upstream.configDigest}`);

    expect(await upstreamTokenCount(path)).toBe(2);
  });

  it("caches a token with a long expires_in", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath("private-");
    await setUpstreamBehaviour(path, { tokenExpiresIn: 3600 });

    await pull(key, `${path}/manifests/latest`);
    await pull(key, `${path}/blobs/${upstream.configDigest}`);

    expect(await upstreamTokenCount(path)).toBe(1);
  });

  it("fetches again after a 401", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath("private-");
    await pull(key, `${path}/manifests/latest`);
    await setUpstreamBehaviour(path, { tokenGeneration: 1 });

    await pull(key, `${path}/blobs/${upstream.configDigest}`);
    await pull(key, `${path}/blobs/${upstream.layerDigest}`);

    expect(await upstreamTokenCount(path)).toBe(2);
    expect(await upstreamCounts(path)).toEqual({
      [`${path}/manifests/latest`]: 2,
      [`${path}/blobs/${upstream.configDigest}`]: 2,
      [`${path}/blobs/${upstream.layerDigest}`]: 1,
    });
  });
});

describe("upstream redirects", () => {
  it("leaves a redirect target's challenge unanswered", async () => {
    const key = await createRemoteRepository({ username: upstream.username, password: upstream.password });
    const path = uniqueUpstreamPath("private-");
    await setUpstreamBehaviour(path, { redirectToHost: `localhost:${new URL(upstream.url).port}` });

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`);

    expect(response.status).toBe(503);
    expect(await upstreamTokenCount(path)).toBe(0);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${upstream.layerDigest}`]: 2 });
  });
});

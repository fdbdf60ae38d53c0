import { createHash, randomBytes } from "node:crypto";
import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authorizationHeaders, delay, requireTools, waitUntil, WranglerDev } from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

let registry: WranglerDev | undefined;

beforeAll(async () => {
  requireTools("npx");
  registry = await WranglerDev.start();
});

afterAll(async () => {
  await registry?.dispose();
});

printLogsOnFailure(() => ({ "wrangler dev": registry }));

/** Returns the administrator's Authorization header for the registry under test. */
function asAdmin(): Record<string, string> {
  return authorizationHeaders(registry!.adminCredentials);
}

/**
 * Sends a chunked request body of `sent` bytes, waits until the registry has
 * had time to stream it into the upload session, then closes the socket
 * before the body is complete.
 */
async function sendAndDisconnect(url: URL, method: string, sent: Buffer): Promise<void> {
  await new Promise<void>((resolve) => {
    const outgoing = request(url, {
      method,
      headers: { "Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream", ...asAdmin() },
    });
    outgoing.on("error", () => resolve());
    outgoing.on("response", () => resolve());
    outgoing.write(sent);
    setTimeout(() => {
      outgoing.destroy();
      resolve();
    }, 1_000);
  });
}

describe("client that disconnects mid-body", () => {
  const name = "docker-local/e2e/disconnect";

  for (const method of ["PATCH", "PUT"] as const) {
    it(`keeps the offset after a ${method}`, async () => {
      const opened = await fetch(`${registry!.url}/v2/${name}/blobs/uploads/`, { method: "POST", headers: asAdmin() });
      expect(opened.status).toBe(202);
      const location = new URL(opened.headers.get("Location")!, registry!.url);
      const uploadId = opened.headers.get("Docker-Upload-UUID")!;
      const first = randomBytes(1_000);
      const rest = randomBytes(300_000);
      const digest = `sha256:${createHash("sha256")
        .update(Buffer.concat([first, rest]))
        .digest("hex")}`;
      const patched = await fetch(location, { method: "PATCH", body: first, headers: asAdmin() });
      expect(patched.headers.get("Range")).toBe("0-999");

      const target = new URL(location);
      if (method === "PUT") target.searchParams.set("digest", digest);
      await sendAndDisconnect(target, method, rest.subarray(0, 100_000));

      const warning = () =>
        registry!
          .logTail(400)
          .split("\n")
          .find((line) => line.includes('"level":"warn"') && line.includes(uploadId));
      await waitUntil("the registry logs the early end of the body", async () => warning() !== undefined, { timeoutMs: 15_000 });
      const logged = JSON.parse(warning()!.slice(warning()!.indexOf("{"))) as Record<string, unknown>;
      expect(logged.message).toBe("upload request body ended early");
      expect(logged.uploadId).toBe(uploadId);
      expect(logged.repository).toBe(name);
      expect(typeof logged.requestId).toBe("string");
      await delay(500);
      const logLines = registry!.logTail(400).split("\n");
      expect(logLines.filter((line) => line.includes("Uncaught"))).toEqual([]);
      expect(logLines.filter((line) => line.includes("unhandled error"))).toEqual([]);

      const status = await fetch(location, { headers: asAdmin() });
      expect(status.status).toBe(204);
      expect(status.headers.get("Range")).toBe("0-999");

      const completed = await fetch(`${location}?digest=${digest}`, {
        method: "PUT",
        headers: { "Content-Range": `1000-${1000 + rest.byteLength - 1}`, ...asAdmin() },
        body: rest,
      });
      expect(completed.status).toBe(201);
      expect(completed.headers.get("Docker-Content-Digest")).toBe(digest);
      const blob = await fetch(`${registry!.url}/v2/${name}/blobs/${digest}`, { headers: asAdmin() });
      const stored = Buffer.from(await blob.arrayBuffer());
      expect(`sha256:${createHash("sha256").update(stored).digest("hex")}`).toBe(digest);
    });
  }
});

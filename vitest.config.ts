import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { defineConfig } from "vitest/config";

/** A throwaway token signing key for the integration tests. */
const testSigningKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();

export default defineConfig({
  test: {
    projects: [
      {
        plugins: [
          cloudflareTest(async () => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                TEST_MIGRATIONS: await readD1Migrations("./migrations"),
                // Small parts keep multipart tests fast; R2 still enforces its 5 MiB minimum.
                UPLOAD_PART_SIZE_MIB: "5",
                UPSTREAM_CLIENT_STALL_SECONDS: "2",
                ADMIN_PASSWORD: "test-admin-password",
                TOKEN_SIGNING_KEY: testSigningKey,
                CREDENTIALS_KEY: randomBytes(32).toString("base64"),
              },
            },
          })),
        ],
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          // The Worker logs one JSON line per request; show them only for failed tests.
          silent: "passed-only",
          setupFiles: ["./test/integration/apply-migrations.ts"],
          // Start the test OpenID Connect issuer for the OIDC login tests, and the test
          // upstream registry for the remote repository tests, both on 127.0.0.1.
          globalSetup: ["./test/oidc-issuer/global-setup.ts", "./test/upstream-registry/global-setup.ts"],
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          testTimeout: 600_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
});

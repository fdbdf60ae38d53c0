// Writes the secrets that `wrangler dev` needs into .dev.vars when they are
// missing: the local administrator password that the README shows, a fresh
// P-256 key for signing registry tokens, and a fresh AES key for upstream
// passwords. Existing values are kept, and missing ones are appended.
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const localAdminPassword = "edge-registry-dev";

const path = fileURLToPath(new URL("../.dev.vars", import.meta.url));
const current = existsSync(path) ? readFileSync(path, "utf8") : "";
const defined = new Set([...current.matchAll(/^([A-Z_][A-Z0-9_]*)=/gm)].map((match) => match[1]));

const additions = [];
if (!defined.has("ADMIN_PASSWORD")) additions.push(`ADMIN_PASSWORD="${localAdminPassword}"`);
if (!defined.has("TOKEN_SIGNING_KEY")) {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const pem = privateKey.export({ type: "pkcs8", format: "pem" }).toString().trim();
  additions.push(`TOKEN_SIGNING_KEY="${pem.replaceAll("\n", "\\n")}"`);
}
if (!defined.has("CREDENTIALS_KEY")) additions.push(`CREDENTIALS_KEY="${randomBytes(32).toString("base64")}"`);

if (additions.length > 0) {
  const separator = current === "" || current.endsWith("\n") ? "" : "\n";
  writeFileSync(path, `${current}${separator}${additions.join("\n")}\n`, { mode: 0o600 });
  console.log(`dev-vars: wrote ${additions.map((line) => line.split("=")[0]).join(", ")} to .dev.vars`);
}

/**
 * Encryption of upstream passwords with AES-GCM (256-bit key from the
 * CREDENTIALS_KEY secret, a random 96-bit IV per value). The repository key
 * is the additional authenticated data, so a ciphertext copied to another
 * repository's row does not decrypt there.
 */
import type { Env } from "../env";
import { RegistryError } from "../errors";
import { log } from "../log";

/** Prefix of the stored format `v1:<base64 IV>:<base64 ciphertext and tag>`, so that a later format can be distinguished. */
const formatVersion = "v1";

/** The CryptoKey imported from the secret's value, reused for the life of the isolate. */
let importedKey: { secret: string; key: Promise<CryptoKey> } | null = null;

/** Username and password that the registry sends to an upstream registry and its token realm. */
export interface UpstreamCredentials {
  username: string;
  password: string;
}

/**
 * Imports CREDENTIALS_KEY as an AES-GCM key. Returns null when the secret is
 * not set. Throws an Error (not a client error) when it is not base64 of 32 bytes.
 */
async function credentialsKey(env: Env): Promise<CryptoKey | null> {
  const secret = env.CREDENTIALS_KEY?.trim();
  if (!secret) return null;
  if (importedKey?.secret !== secret) {
    const raw = decodeBase64(secret);
    if (raw?.byteLength !== 32) throw new Error("CREDENTIALS_KEY must be base64 of 32 random bytes");
    importedKey = { secret, key: crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]) };
  }
  return importedKey.key;
}

/**
 * Encrypts an upstream password for the remote repository `repositoryKey`.
 * Throws INVALID_REQUEST when CREDENTIALS_KEY is missing or malformed,
 * because then no password can be stored safely.
 */
export async function encryptPassword(env: Env, repositoryKey: string, password: string): Promise<string> {
  let key: CryptoKey | null;
  try {
    key = await credentialsKey(env);
  } catch (error) {
    log.error("CREDENTIALS_KEY is invalid", { error: String(error) });
    throw missingKeyError("the CREDENTIALS_KEY secret is not base64 of 32 bytes");
  }
  if (!key) throw missingKeyError("the CREDENTIALS_KEY secret is not set");

  const iv = crypto.getRandomValues(new Uint8Array(12));
  const additionalData = new TextEncoder().encode(repositoryKey);
  const ciphertext = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData }, key, new TextEncoder().encode(password));
  return `${formatVersion}:${encodeBase64(iv)}:${encodeBase64(new Uint8Array(ciphertext))}`;
}

/**
 * Decrypts the stored upstream password of `repositoryKey`. Throws an Error
 * when CREDENTIALS_KEY is missing or differs from the key that encrypted it,
 * or when the value belongs to another repository or was altered.
 */
export async function decryptPassword(env: Env, repositoryKey: string, stored: string): Promise<string> {
  const key = await credentialsKey(env);
  if (!key) throw new Error("CREDENTIALS_KEY is not set");

  const [version, ivText, ciphertextText, ...rest] = stored.split(":");
  const iv = decodeBase64(ivText ?? "");
  const ciphertext = decodeBase64(ciphertextText ?? "");
  if (version !== formatVersion || rest.length > 0 || iv?.byteLength !== 12 || !ciphertext) {
    throw new Error("the stored upstream password is not in the v1 format");
  }
  const additionalData = new TextEncoder().encode(repositoryKey);
  // AES-GCM rejects a wrong key, a wrong repository key or altered bytes with an OperationError.
  const plaintext = await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData }, key, ciphertext);
  return new TextDecoder().decode(plaintext);
}

function missingKeyError(reason: string): RegistryError {
  return new RegistryError(
    "INVALID_REQUEST",
    `${reason}, so an upstream password cannot be stored; set it with wrangler secret put CREDENTIALS_KEY`,
    {
      issues: [{ path: "password", message: `${reason}; leave out password or configure CREDENTIALS_KEY` }],
    },
  );
}

function encodeBase64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/** Decodes standard base64, returning null for anything else. */
function decodeBase64(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) return null;
  return Uint8Array.from(atob(text), (character) => character.charCodeAt(0));
}

import { RegistryError } from "./errors";

/** One path component of the OCI name grammar. */
const componentPattern = "[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*";
const namePattern = new RegExp(`^${componentPattern}(?:/${componentPattern})*$`);
const componentRegex = new RegExp(`^${componentPattern}$`);
const tagPattern = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/**
 * Maximum name length in characters. distribution/reference sets
 * NameTotalLengthMax to 255 and rejects only names longer than that.
 */
export const maxNameLength = 255;

/** Hex length of each digest algorithm the registry accepts. */
const digestHexLength: Record<string, number> = { sha256: 64, sha512: 128 };

/** A validated image name split into its repository key and its path. */
export interface ImageName {
  /** The whole OCI repository name, such as `docker-local/team/app`. */
  full: string;
  /** The first component: the key of the repository that stores the image. */
  repositoryKey: string;
  /** Everything after the repository key, such as `team/app`. */
  path: string;
}

/** Parses an image name, rejecting anything outside the OCI grammar with NAME_INVALID. */
export function parseImageName(name: string): ImageName {
  if (name.length > maxNameLength) {
    throw new RegistryError("NAME_INVALID", `name is ${name.length} characters long; the maximum is ${maxNameLength}`, {
      name: name.slice(0, 64),
    });
  }
  if (!namePattern.test(name)) {
    throw new RegistryError("NAME_INVALID", "name must match the OCI grammar: lowercase components separated by '/'", { name });
  }

  const slash = name.indexOf("/");
  if (slash === -1) {
    throw new RegistryError("NAME_INVALID", "name must be '<repository key>/<image path>', for example docker-local/app", { name });
  }
  return { full: name, repositoryKey: name.slice(0, slash), path: name.slice(slash + 1) };
}

/** Returns whether a string is a valid repository key (one OCI name component). */
export function isRepositoryKey(key: string): boolean {
  return key.length <= 64 && componentRegex.test(key);
}

export function assertTag(tag: string): void {
  if (!tagPattern.test(tag)) {
    throw new RegistryError("TAG_INVALID", "tag must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}", { tag });
  }
}

/** Returns whether a manifest reference is a digest rather than a tag. */
export function isDigestReference(reference: string): boolean {
  return reference.includes(":");
}

/**
 * Percent-decodes a digest taken from a request path, then validates it like
 * `parseDigest`. A malformed escape such as `%zz` is DIGEST_INVALID.
 */
export function parseDigestFromPath(encoded: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(encoded);
  } catch {
    throw new RegistryError("DIGEST_INVALID", "digest in the path contains a malformed percent escape", { digest: encoded });
  }
  return parseDigest(decoded);
}

/**
 * Validates a digest per algorithm and returns it unchanged. Only sha256 and
 * sha512 are accepted, with lowercase hex of their exact length.
 */
export function parseDigest(digest: string): string {
  const colon = digest.indexOf(":");
  const algorithm = colon === -1 ? "" : digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  const expectedLength = digestHexLength[algorithm];
  if (expectedLength === undefined) {
    throw new RegistryError("DIGEST_INVALID", "digest algorithm must be sha256 or sha512", { digest });
  }
  if (hex.length !== expectedLength || !/^[a-f0-9]+$/.test(hex)) {
    throw new RegistryError("DIGEST_INVALID", `${algorithm} digest must be ${expectedLength} lowercase hex characters`, { digest });
  }
  return digest;
}

import type { ParsedManifest } from "./schema";

/**
 * Largest manifest whose annotations are copied into its D1 row. D1 rejects
 * a string or row over 2,000,000 bytes, and a manifest may be 4 MiB, so the
 * referrers list reads the annotations of larger manifests from R2 instead.
 * The annotations' JSON is never longer than the manifest that contains them.
 */
export const maxIndexedManifestBytes = 64 * 1024;

/**
 * Returns the annotations to store in the manifest's D1 row, or null. Only the
 * referrers list reads them, so manifests without a subject store none.
 */
export function indexedAnnotations(manifest: ParsedManifest, size: number): Record<string, string> | null {
  if (manifest.subjectDigest === null || size > maxIndexedManifestBytes) return null;
  return manifest.annotations;
}

/** Returns whether a manifest's annotations are in R2 only, not in its D1 row. */
export function annotationsOnlyInR2(size: number): boolean {
  return size > maxIndexedManifestBytes;
}

/** Reads the top-level annotations of stored manifest bytes, which were validated when pushed. */
export function annotationsOf(bytes: ArrayBuffer): Record<string, string> | null {
  const manifest = JSON.parse(new TextDecoder().decode(bytes)) as { annotations?: Record<string, string> };
  return manifest.annotations ?? null;
}

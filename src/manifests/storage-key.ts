/** Returns the R2 key of a manifest's exact bytes; manifests are shared by digest like blobs. */
export function manifestStorageKey(digest: string): string {
  const [algorithm, hex] = digest.split(":");
  return `manifests/${algorithm}/${hex}`;
}

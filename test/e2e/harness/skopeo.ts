import { run, runOk, type RunOptions, type RunResult } from "./process.ts";
import { sha256Digest } from "./images.ts";
import { requireTools } from "./tools.ts";

/**
 * skopeo against plain-http registries. Every command gets
 * `--insecure-policy`, so no signature policy file is needed, and registry
 * access gets the `--tls-verify=false` flag of its subcommand.
 */
export class Skopeo {
  readonly #binary: string;

  constructor() {
    this.#binary = requireTools("skopeo").skopeo;
  }

  /** Runs `skopeo --insecure-policy <args>` and raises CommandError on a non-zero exit. */
  skopeo(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    return runOk(this.#binary, ["--insecure-policy", ...args], options);
  }

  /** Like `skopeo` but returns the result whatever the exit status. */
  trySkopeo(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    return run(this.#binary, ["--insecure-policy", ...args], options);
  }

  /** `skopeo copy`, with `--all` unless `all` is false so that every manifest of an index is copied. */
  copy(source: string, destination: string, options: { all?: boolean; extraArgs?: string[] } = {}): Promise<RunResult> {
    const args = ["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
    if (options.all ?? true) args.push("--all");
    return this.skopeo([...args, ...(options.extraArgs ?? []), source, destination]);
  }

  /** Returns the exact manifest bytes of an image reference (`skopeo inspect --raw`). */
  async rawManifest(reference: string): Promise<Buffer> {
    const result = await this.skopeo(["inspect", "--raw", ...tlsArgs(reference), reference]);
    return result.stdoutBytes;
  }

  /** Returns the sha256 digest of the manifest bytes that `reference` resolves to. */
  async manifestDigest(reference: string): Promise<string> {
    return sha256Digest(await this.rawManifest(reference));
  }

  /** `skopeo delete` of a docker:// reference. */
  delete(reference: string): Promise<RunResult> {
    return this.skopeo(["delete", "--tls-verify=false", reference]);
  }

  /** `skopeo inspect --raw` that returns the result whatever the exit status, to check a failure. */
  tryRawManifest(reference: string): Promise<RunResult> {
    return this.trySkopeo(["inspect", "--raw", ...tlsArgs(reference), reference]);
  }
}

/** `--tls-verify` is valid only for the docker transport. */
function tlsArgs(reference: string): string[] {
  return reference.startsWith("docker://") ? ["--tls-verify=false"] : [];
}

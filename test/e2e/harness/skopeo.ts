import { run, runOk, type RunOptions, type RunResult } from "./process.ts";
import { sha256Digest } from "./images.ts";
import type { Credentials } from "./registry-client.ts";
import { requireTools } from "./tools.ts";

export interface CopyOptions {
  /** Whether to copy every manifest of an index (`--all`); true when unset. */
  all?: boolean;
  /** Options added before the source and destination, such as `--override-arch arm64`. */
  extraArgs?: string[];
}

/**
 * skopeo against plain-http registries. Every command gets
 * `--insecure-policy`, so no signature policy file is needed, and registry
 * access gets the `--tls-verify=false` flag of its subcommand.
 *
 * Each docker:// reference gets the credentials given for its host, as
 * `--creds`, `--src-creds` or `--dest-creds`, and every other host is
 * accessed with `--no-creds` and its variants. So skopeo never uses logins
 * stored on the machine.
 */
export class Skopeo {
  readonly #binary: string;
  readonly #credentials: ReadonlyMap<string, Credentials>;

  /** `credentials` maps a registry host such as `127.0.0.1:24817` to the credentials for it. */
  constructor(credentials: Record<string, Credentials> = {}) {
    this.#binary = requireTools("skopeo").skopeo;
    this.#credentials = new Map(Object.entries(credentials));
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
  copy(source: string, destination: string, options: CopyOptions = {}): Promise<RunResult> {
    return this.skopeo(this.#copyArgs(source, destination, options));
  }

  /** Like `copy` but returns the result whatever the exit status, to check a failure. */
  tryCopy(source: string, destination: string, options: CopyOptions = {}): Promise<RunResult> {
    return this.trySkopeo(this.#copyArgs(source, destination, options));
  }

  /** Returns the exact manifest bytes of an image reference (`skopeo inspect --raw`). */
  async rawManifest(reference: string): Promise<Buffer> {
    const result = await this.skopeo(["inspect", "--raw", ...this.#registryArgs(reference), reference]);
    return result.stdoutBytes;
  }

  /** Returns the sha256 digest of the manifest bytes that `reference` resolves to. */
  async manifestDigest(reference: string): Promise<string> {
    return sha256Digest(await this.rawManifest(reference));
  }

  /** `skopeo delete` of a docker:// reference. */
  delete(reference: string): Promise<RunResult> {
    return this.skopeo(["delete", ...this.#registryArgs(reference), reference]);
  }

  /** `skopeo inspect --raw` that returns the result whatever the exit status, to check a failure. */
  tryRawManifest(reference: string): Promise<RunResult> {
    return this.trySkopeo(["inspect", "--raw", ...this.#registryArgs(reference), reference]);
  }

  #copyArgs(source: string, destination: string, options: CopyOptions): string[] {
    const args = ["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
    args.push(...this.#credentialArgs(source, "--src-"), ...this.#credentialArgs(destination, "--dest-"));
    if (options.all ?? true) args.push("--all");
    return [...args, ...(options.extraArgs ?? []), source, destination];
  }

  /**
   * Returns `--tls-verify=false` and the credential option of a docker://
   * reference, for subcommands that access one image, and nothing for other
   * transports, which reject `--tls-verify`.
   */
  #registryArgs(reference: string): string[] {
    if (!reference.startsWith("docker://")) return [];
    return ["--tls-verify=false", ...this.#credentialArgs(reference, "--")];
  }

  /**
   * Returns the credential option of a docker:// reference, such as
   * `--src-creds admin:secret` for `prefix` "--src-", and no option for
   * other transports.
   */
  #credentialArgs(reference: string, prefix: "--" | "--src-" | "--dest-"): string[] {
    if (!reference.startsWith("docker://")) return [];
    const host = reference.slice("docker://".length).split("/")[0]!;
    const credentials = this.#credentials.get(host);
    return credentials ? [`${prefix}creds`, `${credentials.username}:${credentials.password}`] : [`${prefix}no-creds`];
  }
}

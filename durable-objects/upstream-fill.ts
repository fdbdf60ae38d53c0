import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import { toRpcResult, unwrapRpcResult, type RpcResult } from "../src/errors";
import { imageStore } from "../src/handlers/shared";
import { log } from "../src/log";
import { isDigestReference, type ImageName } from "../src/names";
import { copyUpstreamBlob, createClientStream, defaultClientStallSeconds } from "../src/remote/blob-copy";
import { cacheManifest } from "../src/remote/pull-through";
import { revalidateTag, type CachedTag } from "../src/remote/revalidate-tag";
import { requestUpstreamBlob } from "../src/remote/upstream-blob";
import { findManifest, findTaggedManifest, type ManifestRow, type RemoteSettingsRow } from "../src/storage/metadata";

/** One caller's request for a blob that its image in a remote repository lacks. */
export interface BlobFillRequest {
  image: ImageName;
  settings: RemoteSettingsRow;
  digest: string;
  /** Whether the caller wants the bytes streamed as they arrive; false waits until the blob is stored. */
  stream: boolean;
}

/** The outcome of a blob fill for one caller. */
export type BlobFillResult =
  /** The upstream does not have the blob, or the repository is offline. */
  | { status: "missing" }
  /** The blob is stored and linked to the caller's image; read it from R2. */
  | { status: "stored" }
  /** This caller started the fill and receives the bytes while they are stored. */
  | { status: "streaming"; size: number; body: ReadableStream<Uint8Array> };

/**
 * One object per item that a remote repository caches: a blob, named by
 * repository key and digest, or a manifest, named by image name and reference
 * (see `src/remote/fill.ts`). Concurrent callers for the same item share one
 * upstream request: the first starts it, and the others wait for its outcome.
 * Nothing is kept in storage, because D1 and R2 record what is cached.
 */
export class UpstreamFill extends DurableObject<Env> {
  /** The running blob fill: true once stored, false when the upstream does not have the blob. */
  #blobFill: Promise<RpcResult<boolean>> | null = null;
  /** Running manifest fills and tag revalidations, by the name of the operation. */
  readonly #runs = new Map<string, Promise<RpcResult<unknown>>>();
  #waitingCallers = 0;

  /** The number of callers waiting for a fill that another caller started. */
  get waitingCallers(): number {
    return this.#waitingCallers;
  }

  /**
   * Fetches a blob upstream, stores it in R2 and links it to the caller's
   * image, unless a fill is already running or another image of the
   * repository already has it. The caller that starts a fill with `stream`
   * receives the bytes while they are stored. Everyone else waits for the
   * fill to finish and reads the blob from R2.
   */
  async fillBlob(request: BlobFillRequest): Promise<RpcResult<BlobFillResult>> {
    return toRpcResult(async () => {
      const running = this.#blobFill;
      if (running) return this.#joinBlobFill(running, request);

      let deliver: (result: BlobFillResult) => void = () => undefined;
      const delivered = new Promise<BlobFillResult>((resolve) => (deliver = resolve));
      const outcome = toRpcResult(() => this.#runBlobFill(request, deliver));
      this.#blobFill = outcome;
      // The fill is not tied to the first caller's RPC call, so it finishes storing when that caller disconnects.
      // NOTE: only memory records a running fill, so if the runtime evicts the object mid-fill, its callers fail and the next miss starts over.
      void outcome.finally(() => (this.#blobFill = null)).catch(() => undefined);

      const finished = outcome.then(unwrapRpcResult).then((stored): BlobFillResult => ({ status: stored ? "stored" : "missing" }));
      return Promise.race([delivered, finished]);
    });
  }

  /**
   * Fetches a manifest upstream and stores it, sharing one upstream request
   * among concurrent callers. Returns null when the upstream does not have it
   * (see `cacheManifest`).
   */
  async fillManifest(image: ImageName, settings: RemoteSettingsRow, reference: string): Promise<RpcResult<ManifestRow | null>> {
    return this.#shareRun("fill", async () => {
      // A caller that missed in D1 just before an earlier fill finished finds its result here.
      const db = this.env.DB;
      const stored = isDigestReference(reference)
        ? await findManifest(db, image.full, reference)
        : await findTaggedManifest(db, image.full, reference);
      return stored ?? cacheManifest(this.env, image, settings, reference);
    });
  }

  /** Revalidates a cached tag upstream (see `revalidateTag`), sharing one HEAD among concurrent callers. */
  async revalidateTag(image: ImageName, settings: RemoteSettingsRow, tag: string, cached: ManifestRow): Promise<RpcResult<CachedTag>> {
    return this.#shareRun(`revalidate ${cached.digest}`, () => revalidateTag(this.env, image, settings, tag, cached));
  }

  /** Runs `work` unless a run of the same name is in progress, in which case the caller waits for that run's outcome. */
  async #shareRun<T>(name: string, work: () => Promise<T>): Promise<RpcResult<T>> {
    const running = this.#runs.get(name) as Promise<RpcResult<T>> | undefined;
    if (running) return this.#wait(running);

    const run = toRpcResult(work);
    this.#runs.set(name, run);
    void run.finally(() => this.#runs.delete(name)).catch(() => undefined);
    return run;
  }

  async #wait<T>(running: Promise<T>): Promise<T> {
    this.#waitingCallers += 1;
    try {
      return await running;
    } finally {
      this.#waitingCallers -= 1;
    }
  }

  /** Waits for the running blob fill, then links the blob to the caller's image, which may differ from the first caller's. */
  async #joinBlobFill(running: Promise<RpcResult<boolean>>, request: BlobFillRequest): Promise<BlobFillResult> {
    const stored = unwrapRpcResult(await this.#wait(running));
    if (!stored) return { status: "missing" };
    await this.#linkStoredBlob(request.image, request.digest);
    return { status: "stored" };
  }

  /**
   * Links a blob that another image of the repository already fetched, or
   * fetches it upstream and stores it. `deliver` receives the client stream
   * as soon as the upstream responds.
   */
  async #runBlobFill(request: BlobFillRequest, deliver: (result: BlobFillResult) => void): Promise<boolean> {
    const { image, settings, digest } = request;
    if (await this.#repositoryHasBlob(image.repositoryKey, digest)) {
      await this.#linkStoredBlob(image, digest);
      return true;
    }

    const upstream = await requestUpstreamBlob(this.env, image, settings, digest);
    if (!upstream) return false;

    const storageKey = `blobs/remote/${crypto.randomUUID()}`;
    log.info("filling a blob from upstream", { repository: image.full, digest, size: upstream.size, storageKey });
    let client: WritableStream<Uint8Array> | null = null;
    if (request.stream) {
      const pipe = createClientStream();
      client = pipe.writable;
      deliver({ status: "streaming", size: upstream.size, body: pipe.readable });
    }
    const target = { storageKey, digest, size: upstream.size };
    await copyUpstreamBlob(
      this.env.BLOBS,
      target,
      upstream.body,
      client,
      async (checksums) => {
        const blob = { ...target, sha1: checksums.sha1, md5: checksums.md5 };
        unwrapRpcResult(await imageStore(this.env, image).linkUploadedBlob(image.full, image.repositoryKey, blob));
      },
      clientStallMs(this.env),
    ).catch(async (error: unknown) => {
      await upstream.client.recordFailure();
      throw error;
    });
    return true;
  }

  async #linkStoredBlob(image: ImageName, digest: string): Promise<void> {
    unwrapRpcResult(await imageStore(this.env, image).linkExistingBlob(image.full, image.repositoryKey, digest));
  }

  /**
   * Returns whether an image of the repository links the blob. Only fills link
   * blobs in a remote repository, so such a link means that its upstream
   * served this digest before.
   */
  async #repositoryHasBlob(repositoryKey: string, digest: string): Promise<boolean> {
    const row = await this.env.DB.prepare(
      `SELECT 1 AS found FROM blob_links l JOIN images i ON i.id = l.image_id
        WHERE i.repository_key = ? AND l.digest = ? LIMIT 1`,
    )
      .bind(repositoryKey, digest)
      .first();
    return row !== null;
  }
}

/** Reads UPSTREAM_CLIENT_STALL_SECONDS in milliseconds, falling back to the default when it is unset or not a positive number. */
function clientStallMs(env: Env): number {
  const seconds = Number(env.UPSTREAM_CLIENT_STALL_SECONDS ?? defaultClientStallSeconds);
  return (Number.isFinite(seconds) && seconds > 0 ? seconds : defaultClientStallSeconds) * 1000;
}

import type { ImageStore } from "../durable-objects/image-store";
import type { UploadSession } from "../durable-objects/upload-session";
import type { UpstreamFill } from "../durable-objects/upstream-fill";

/** Bindings and variables declared in wrangler.toml. */
export interface Env {
  BLOBS: R2Bucket;
  DB: D1Database;
  UPLOAD_SESSIONS: DurableObjectNamespace<UploadSession>;
  IMAGE_STORES: DurableObjectNamespace<ImageStore>;
  UPSTREAM_FILLS: DurableObjectNamespace<UpstreamFill>;
  /** Seconds an upload session may stay idle before it is aborted. */
  UPLOAD_TTL_SECONDS: string;
  /** Seconds a remote blob fill waits for a first client that reads nothing before it drops that client; 30 when unset. */
  UPSTREAM_CLIENT_STALL_SECONDS?: string;
  /** Size in MiB of each R2 multipart part. */
  UPLOAD_PART_SIZE_MIB: string;
  /** Secret: the password of the `admin` user that the first start creates. */
  ADMIN_PASSWORD?: string;
  /** Secret: PKCS#8 PEM of the P-256 key that signs registry tokens. */
  TOKEN_SIGNING_KEY?: string;
  /**
   * Secret: base64 of 32 random bytes, the AES-GCM key that encrypts upstream
   * passwords of remote repositories. Without it no password can be set.
   */
  CREDENTIALS_KEY?: string;
  /** The `iss` claim of registry tokens. */
  TOKEN_ISSUER: string;
}

import { app } from "./app";

export { ImageStore } from "../durable-objects/image-store";
export { UploadSession } from "../durable-objects/upload-session";
export { UpstreamFill } from "../durable-objects/upstream-fill";

export default app;

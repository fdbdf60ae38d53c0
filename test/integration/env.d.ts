import type { D1Migration } from "cloudflare:test";
import type { Env as RegistryEnv } from "../../src/env";

declare global {
  namespace Cloudflare {
    interface Env extends RegistryEnv {
      TEST_MIGRATIONS: D1Migration[];
    }

    /** Types `exports.default` from "cloudflare:workers" as the Worker's own fetch handler. */
    interface GlobalProps {
      mainModule: typeof import("../../src/index");
    }
  }
}

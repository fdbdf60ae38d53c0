import { beforeEach } from "vitest";

/** Something whose log helps explain a failed test, such as WranglerDev or DockerEngine. */
interface LogSource {
  logTail(lines?: number): string;
}

/**
 * Prints the last lines of each service's log when a test of the current
 * file fails. `sources` is called at failure time, so services started in
 * beforeAll are found even though they do not exist yet when this runs.
 */
export function printLogsOnFailure(sources: () => Record<string, LogSource | undefined>): void {
  beforeEach((context) => {
    context.onTestFailed(() => {
      for (const [name, source] of Object.entries(sources())) {
        if (source) console.error(`--- last lines of the ${name} log ---\n${source.logTail()}`);
      }
    });
  });
}

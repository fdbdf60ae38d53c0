import { spawn, type ChildProcess } from "node:child_process";
import { openSync, closeSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Options for a command that runs to completion. */
export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Milliseconds before the command's process group is killed; 5 minutes when unset. */
  timeoutMs?: number;
  /** Text written to the command's stdin, which is closed after it; stdin is closed at once when unset. */
  input?: string;
}

export interface RunResult {
  /** The command line as a shell would show it, for messages. */
  command: string;
  /** Exit code, or null when a signal ended the process. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** The exact bytes of stdout, for output such as a raw manifest. */
  stdoutBytes: Buffer;
  stderr: string;
  timedOut: boolean;
}

/** Raised by `runOk` when a command exits with a status other than 0. */
export class CommandError extends Error {
  readonly result: RunResult;

  constructor(result: RunResult) {
    let status = `exited with status ${result.code}`;
    if (result.signal) status = `was killed by ${result.signal}`;
    if (result.timedOut) status = "timed out";
    super(`command ${status}: ${result.command}\n--- stdout ---\n${tail(result.stdout, 40)}\n--- stderr ---\n${tail(result.stderr, 40)}`);
    this.name = "CommandError";
    this.result = result;
  }
}

/**
 * Runs a command to completion and returns its output, whatever its exit
 * status. Its stdin gets `options.input` and then end of file, or end of
 * file at once when that is unset. The command runs in its own process
 * group so a timeout kills its children too.
 */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const commandLine = [command, ...args].map(quoteArgument).join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
    });
    runningCommands.add(child);
    // A command that exits without reading its input makes the write fail with EPIPE. Its exit status and output explain more.
    child.stdin.on("error", () => {});
    child.stdin.end(options.input ?? "");
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));

    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      signalGroup(child, "SIGKILL");
    }, options.timeoutMs ?? 300_000);

    child.on("error", (error) => {
      clearTimeout(timer);
      runningCommands.delete(child);
      reject(new Error(`failed to start ${commandLine}: ${error.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      runningCommands.delete(child);
      const stdoutBytes = Buffer.concat(stdout);
      resolve({
        command: commandLine,
        code,
        signal,
        stdout: stdoutBytes.toString("utf8"),
        stdoutBytes,
        stderr: Buffer.concat(stderr).toString("utf8"),
        timedOut,
      });
    });
  });
}

/** Runs a command and raises CommandError, with its output, unless it exits with status 0. */
export async function runOk(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) throw new CommandError(result);
  return result;
}

/** Options for a long-running process such as a server or daemon. */
export interface ServiceOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** File that receives the process's stdout and stderr. */
  logFile: string;
}

/** Every service that is still running, so that an exiting test process can stop them. */
const runningServices = new Set<Service>();

/** Commands started by `run` that have not exited yet. */
const runningCommands = new Set<ChildProcess>();

/** Sends SIGTERM rather than SIGKILL, which lets dockerd remove its mounts as it exits. */
function terminateChildren(): void {
  for (const child of runningCommands) signalGroup(child, "SIGTERM");
  for (const service of runningServices) service.signal("SIGTERM");
}

process.on("exit", terminateChildren);

// Services and commands run in their own process groups, so a Ctrl-C or a
// CI timeout that signals this process's group does not reach them. Node
// skips "exit" handlers when a signal kills it, so these handlers terminate
// the children and then re-raise the signal, unless another listener has
// taken it over.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    terminateChildren();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  });
}

/**
 * A long-running process started in its own process group, with stdout and
 * stderr appended to a log file. Stopping it signals the whole group, which
 * also ends children such as the workerd that wrangler starts.
 */
export class Service {
  readonly name: string;
  readonly logFile: string;
  /** Settles with the exit code and signal once the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #child: ChildProcess;
  #running = true;

  constructor(name: string, command: string, args: readonly string[], options: ServiceOptions) {
    this.name = name;
    this.logFile = options.logFile;
    const log = openSync(options.logFile, "a");
    try {
      this.#child = spawn(command, args, {
        cwd: options.cwd,
        env: options.env ?? process.env,
        stdio: ["ignore", log, log],
        detached: true,
      });
    } finally {
      closeSync(log);
    }

    this.exited = new Promise((resolve) => {
      this.#child.on("error", (error) => {
        this.#markExited();
        resolve({ code: null, signal: null });
        console.error(`${name}: failed to start ${command}: ${error.message}`);
      });
      this.#child.on("exit", (code, signal) => {
        this.#markExited();
        resolve({ code, signal });
      });
    });
    runningServices.add(this);
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  get running(): boolean {
    return this.#running;
  }

  /**
   * Sends SIGTERM to the process group and waits for the process to exit;
   * after `graceMs` it sends SIGKILL. Children that ignore SIGTERM are
   * killed with the group in that second step.
   */
  async stop(graceMs = 20_000): Promise<void> {
    if (!this.#running) {
      // The leader is gone, but children it left in the group may still run.
      signalGroup(this.#child, "SIGKILL");
      return;
    }
    signalGroup(this.#child, "SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), graceMs);
    });
    const stopped = await Promise.race([this.exited.then(() => true), graceOver]);
    clearTimeout(timer);
    if (!stopped) {
      console.warn(`${this.name} did not exit ${graceMs} ms after SIGTERM; sending SIGKILL`);
      signalGroup(this.#child, "SIGKILL");
      await this.exited;
    }
    // The leader has exited; anything left in its group gets SIGKILL.
    signalGroup(this.#child, "SIGKILL");
  }

  /** Sends a signal to the process group without waiting, for use in an exit handler. */
  signal(signal: NodeJS.Signals): void {
    signalGroup(this.#child, signal);
  }

  /** Returns the last lines of the service's log, without terminal color codes. */
  logTail(lines = 60): string {
    try {
      return tail(readFileSync(this.logFile, "utf8").replace(ansiEscape, ""), lines);
    } catch (error) {
      return `(log ${this.logFile} is unreadable: ${String(error)})`;
    }
  }

  #markExited(): void {
    this.#running = false;
    runningServices.delete(this);
  }
}

/**
 * Polls a condition until it returns true. Raises when `timeoutMs` passes or
 * when the service it waits for exits first; both messages include the
 * service's log.
 */
export async function waitUntil(
  description: string,
  condition: () => Promise<boolean>,
  options: {
    timeoutMs: number;
    service?: Service;
    intervalMs?: number;
    /** Returns a reason to stop waiting at once, such as an error in the service's log, or null to go on. */
    failure?: () => string | null;
  },
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    if (await condition().catch(() => false)) return;
    const failure = options.failure?.();
    if (failure) {
      const log = options.service ? `; log ${options.service.logFile}:\n${options.service.logTail()}` : "";
      throw new Error(`${failure} while waiting until ${description}${log}`);
    }
    if (options.service && !options.service.running) {
      const { code, signal } = await options.service.exited;
      throw new Error(
        `${options.service.name} exited (code ${code}, signal ${signal}) before ${description}; log ${options.service.logFile}:\n${options.service.logTail()}`,
      );
    }
    if (Date.now() > deadline) {
      const log = options.service ? `; log ${options.service.logFile}:\n${options.service.logTail()}` : "";
      throw new Error(`timed out after ${options.timeoutMs} ms waiting until ${description}${log}`);
    }
    await delay(options.intervalMs ?? 250);
  }
}

/** Returns whether `GET url` returns the status within two seconds. */
export async function answersWithStatus(url: string, status: number): Promise<boolean> {
  const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  await response.body?.cancel();
  return response.status === status;
}

/** Returns whether `GET url` gets any HTTP response within two seconds, so a server listens there. */
export async function respondsToHttp(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await response.body?.cancel();
    return true;
  } catch {
    return false;
  }
}

const issuedPorts = new Set<number>();

/**
 * Returns a TCP port on 127.0.0.1 that is free right now. Ports come from
 * 20000-31999, below Linux's default ephemeral range (32768-60999), so an
 * outgoing connection is unlikely to take the port between this check and
 * the service binding it, or between a service's stop and its restart.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (issuedPorts.has(port)) continue;
    if (await canListen(port)) {
      issuedPorts.add(port);
      return port;
    }
  }
  throw new Error("found no free TCP port on 127.0.0.1 in 20000-31999 after 200 attempts");
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** Creates a folder under the system temp folder whose name starts with `edge-registry-e2e-<label>-`. */
export function makeTempDir(label: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `edge-registry-e2e-${label}-`));
}

/**
 * Deletes a temp folder, unless E2E_KEEP_TMP=1 is set to keep it for
 * debugging. A failure is logged, not raised, so that cleanup goes on.
 */
export async function removeTempDir(dir: string): Promise<void> {
  if (process.env.E2E_KEEP_TMP === "1") {
    console.info(`keeping ${dir} because E2E_KEEP_TMP=1`);
    return;
  }
  try {
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  } catch (error) {
    console.warn(`failed to delete ${dir}: ${String(error)}`);
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch (error) {
    // ESRCH: the group is already gone.
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}

// CSI sequences such as the colors that wrangler prints even with NO_COLOR set.
const ansiEscape = /\x1b\[[0-9;?]*[A-Za-z]/g;

function tail(text: string, lines: number): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

function quoteArgument(argument: string): string {
  return /^[\w@%+=:,./-]+$/.test(argument) ? argument : `'${argument.replaceAll("'", "'\\''")}'`;
}

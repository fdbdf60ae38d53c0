// CPU time of process groups, read from /proc: utime and stime of each
// process (proc(5), fields 14 and 15) and of this process's waited-for
// children (fields 16 and 17).

import { readdirSync, readFileSync } from "node:fs";

/** Kernel clock ticks per second, the unit of those fields: USER_HZ, which is 100 on Linux. */
const clockTicksPerSecond = 100;

/** Returns the fields of /proc/<pid>/stat after the command name, so that index 0 is field 3 (state). */
function statFields(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name is in parentheses and may contain spaces, so fields are counted after the last ")".
  return { comm: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")), fields: stat.slice(stat.lastIndexOf(")") + 2).split(" ") };
}

/** Reads pid, parent pid, command name and CPU ticks of every process in /proc. */
function readProcessTable() {
  const table = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const { comm, fields } = statFields(entry);
      table.push({ pid: Number(entry), ppid: Number(fields[1]), comm, ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // The process exited between readdir and read.
    }
  }
  return table;
}

/** Returns the process with `rootPid` and all its descendants. */
function processTree(table, rootPid) {
  const children = new Map();
  for (const row of table) {
    if (!children.has(row.ppid)) children.set(row.ppid, []);
    children.get(row.ppid).push(row);
  }
  const tree = table.filter((row) => row.pid === rootPid);
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i].pid) ?? []));
  return tree;
}

function commandLine(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

/**
 * Finds the topmost process whose command line contains `marker`, such as
 * the temp folder a server was started with. Throws unless exactly one
 * such process has no matching parent.
 */
export function findRootProcess(marker) {
  const table = readProcessTable();
  const matching = new Set(table.filter((row) => commandLine(row.pid).includes(marker)).map((row) => row.pid));
  const roots = table.filter((row) => matching.has(row.pid) && !matching.has(row.ppid));
  if (roots.length !== 1) {
    const found = roots.map((row) => `${row.comm}(${row.pid})`).join(", ");
    throw new Error(`expected one process tree whose command line contains ${marker}, found ${roots.length}: ${found}`);
  }
  return roots[0].pid;
}

/**
 * Takes a snapshot of CPU ticks per process for each named group. A group is
 * the process tree under a root pid, narrowed when given to the command
 * names in `comm`, to those not in `exclude` and to command lines that
 * contain `argument`: `groups` maps a group name to
 * `{ rootPid, comm?, exclude?, argument? }`.
 */
export function sampleCpu(groups) {
  const table = readProcessTable();
  const snapshot = {};
  for (const [name, group] of Object.entries(groups)) {
    const members = groupMembers(table, group);
    snapshot[name] = new Map(members.map((row) => [row.pid, row.ticks]));
  }
  return snapshot;
}

/**
 * Returns the CPU seconds each group used between two snapshots. A process
 * that started in between counts from zero. One that exited in between is
 * not counted, which is why the groups are long-running servers.
 */
export function cpuSecondsBetween(before, after) {
  const seconds = {};
  for (const [name, processes] of Object.entries(after)) {
    let ticks = 0;
    for (const [pid, total] of processes) ticks += total - (before[name]?.get(pid) ?? 0);
    seconds[name] = ticks / clockTicksPerSecond;
  }
  return seconds;
}

function groupMembers(table, { rootPid, comm, exclude, argument }) {
  return processTree(table, rootPid).filter(
    (row) => (!comm || comm.includes(row.comm)) && !exclude?.includes(row.comm) && (!argument || commandLine(row.pid).split(" ").includes(argument)),
  );
}

/** Takes a snapshot of CPU ticks and command names of every process on the machine. */
export function sampleAllProcesses() {
  return new Map(readProcessTable().map((row) => [row.pid, row]));
}

/**
 * Returns the processes outside `groups` that used at least `minSeconds` of
 * CPU between two snapshots of sampleAllProcesses, largest first. Processes
 * that started and exited in between are missing from the list.
 */
export function busiestOtherProcesses(before, after, groups, minSeconds = 0.5) {
  const table = [...after.values()];
  const measured = new Set(Object.values(groups).flatMap((group) => processTree(table, group.rootPid).map((row) => row.pid)));
  measured.add(process.pid);
  return table
    .filter((row) => !measured.has(row.pid))
    .map((row) => ({ pid: row.pid, comm: row.comm, seconds: (row.ticks - (before.get(row.pid)?.ticks ?? 0)) / clockTicksPerSecond }))
    .filter((row) => row.seconds >= minSeconds)
    .sort((a, b) => b.seconds - a.seconds)
    .slice(0, 5)
    .map((row) => ({ ...row, command: commandLine(row.pid).slice(0, 160) }));
}

/** Lists the command names and pids in a group, to record which processes were counted. */
export function describeGroup(group) {
  return groupMembers(readProcessTable(), group).map((row) => `${row.comm}(${row.pid})`);
}

/**
 * Returns the CPU seconds of this process's children that have exited and
 * been waited for (cutime + cstime). The difference around one command is
 * that command's CPU time.
 */
export function exitedChildrenCpuSeconds() {
  const { fields } = statFields("self");
  return (Number(fields[13]) + Number(fields[14])) / clockTicksPerSecond;
}

/**
 * Returns the busy CPU seconds of the whole machine since boot, all cores
 * together: every column of the "cpu" line of /proc/stat except idle and
 * iowait. The difference around a step shows how much other programs ran.
 */
export function machineBusySeconds() {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0];
  const [, ...columns] = line.trim().split(/\s+/).map(Number);
  // Columns: user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
  const [user, nice, system, , , irq, softirq, steal] = columns;
  return (user + nice + system + irq + softirq + steal) / clockTicksPerSecond;
}

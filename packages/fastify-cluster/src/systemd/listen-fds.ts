/**
 * systemd socket activation (sd_listen_fds(3)): the service manager passes listening sockets from
 * fd 3 on and says so in LISTEN_FDS (how many), LISTEN_PID (for which process: a child that inherits
 * the env must not take them) and LISTEN_FDNAMES (colon-separated names, `FileDescriptorName=`).
 * The same variables carry the sockets from an old primary to its replacement (see
 * ../primary/upgrade.ts), so both ways into a cluster are one code path.
 */

export const SD_LISTEN_FDS_START = 3

export interface ListenFds {
  /** The descriptors, from 3 on. */
  fds: number[]
  /** One name per descriptor ('unknown' when systemd gave none, as sd_listen_fds_with_names does). */
  names: string[]
}

/**
 * Read the variables for process `pid`: undefined when they are absent or meant for another
 * process; throws with one line when they are malformed (systemd never sends that: someone set them by hand).
 */
export function parseListenFds (env: Record<string, string | undefined>, pid: number): ListenFds | undefined {
  const count = env.LISTEN_FDS
  const forPid = env.LISTEN_PID
  if (count === undefined || count === '' || forPid === undefined || forPid === '') return undefined
  if (!/^\d+$/.test(forPid)) throw new Error(`invalid env LISTEN_PID: got ${JSON.stringify(forPid)}, expected a process id`)
  if (Number(forPid) !== pid) return undefined
  if (!/^\d+$/.test(count) || Number(count) > 1024) throw new Error(`invalid env LISTEN_FDS: got ${JSON.stringify(count)}, expected a count of descriptors`)
  const n = Number(count)
  if (n === 0) return undefined
  const fds = Array.from({ length: n }, (_, i) => SD_LISTEN_FDS_START + i)
  const given = env.LISTEN_FDNAMES === undefined || env.LISTEN_FDNAMES === '' ? [] : env.LISTEN_FDNAMES.split(':')
  const names = fds.map((_, i) => given[i] ?? 'unknown')
  return { fds, names }
}

/**
 * Take the sockets meant for this process and unset the variables (sd_listen_fds(unset=1)): the
 * workers inherit the primary's env and must never act on them.
 */
export function takeListenFds (env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): ListenFds | undefined {
  const got = parseListenFds(env, pid)
  delete env.LISTEN_FDS
  delete env.LISTEN_PID
  delete env.LISTEN_FDNAMES
  return got
}

/**
 * The descriptors to serve HTTP on: named `http` (or `nclust`) when any is so named, otherwise all of
 * them except the ones named for nclust's own use (`nclust-control`, `nclust-metrics`).
 */
export function httpFds (l: ListenFds): number[] {
  const named = l.fds.filter((_, i) => l.names[i] === 'http' || l.names[i] === 'nclust')
  if (named.length > 0) return named
  return l.fds.filter((_, i) => !(l.names[i] ?? '').startsWith('nclust-'))
}

/** The descriptor named `name`, if any. */
export function namedFd (l: ListenFds | undefined, name: string): number | undefined {
  if (l === undefined) return undefined
  const i = l.names.indexOf(name)
  return i === -1 ? undefined : l.fds[i]
}

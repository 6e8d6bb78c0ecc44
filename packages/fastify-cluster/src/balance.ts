import { readFileSync } from 'node:fs'

/**
 * Kernel balancing (`balance: 'kernel'`): each worker listens with `reusePort: true` (SO_REUSEPORT),
 * so it owns its listening socket and the kernel spreads new connections over the workers by a hash
 * of the 4-tuple. In a cluster worker, Node turns `reusePort: true` into an exclusive listen: the
 * primary never creates, holds or round-robins that handle (lib/net.js: `if (options.reusePort ===
 * true) options.exclusive = true`, and `listenInCluster` then binds in the worker itself).
 *
 * Node 20 and 22 before 22.12 (23 before 23.1) ignore the option silently and would fall back to
 * the primary's round-robin, so it is refused there; so is an OS whose kernel does not balance
 * SO_REUSEPORT listeners (only Linux is supported and tested).
 */

export type Balance = 'primary' | 'kernel'
export const BALANCE_VALUES: readonly Balance[] = ['primary', 'kernel']

/** Why kernel balancing cannot work here, or undefined when it can. */
export function kernelBalanceUnsupported (version: string = process.version, platform: string = process.platform): string | undefined {
  const [major = 0, minor = 0] = version.replace(/^v/, '').split('.').map(Number)
  if (!(major >= 24 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12))) {
    return `kernel balancing needs listen({ reusePort }) from Node 22.12+ or 23.1+, this is Node ${version}`
  }
  if (platform !== 'linux') return `kernel balancing needs Linux (SO_REUSEPORT load balancing), this is ${platform}`
  return undefined
}

/**
 * `net.ipv4.tcp_migrate_req` (Linux 5.14+): when on, a closing listener hands the connections still in
 * its accept queue to another listener of the same port; when off, the kernel resets them. Returns
 * `'on'`, `'off'`, or `'unknown'` (older kernel, no /proc).
 */
export function tcpMigrateReq (root = '/'): 'on' | 'off' | 'unknown' {
  try {
    const v = readFileSync(`${root.replace(/\/$/, '')}/proc/sys/net/ipv4/tcp_migrate_req`, 'utf8').trim()
    return v === '0' ? 'off' : 'on'
  } catch {
    return 'unknown'
  }
}

export const TCP_MIGRATE_WARNING = 'balance kernel: net.ipv4.tcp_migrate_req is 0, so a worker that closes its listener ' +
  '(reload, restart, shutdown) resets the connections still in its accept queue; ' +
  'set sysctl net.ipv4.tcp_migrate_req=1 (per network namespace, Linux 5.14+)'

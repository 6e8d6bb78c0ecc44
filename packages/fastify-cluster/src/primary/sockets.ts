import { closeSync, linkSync, renameSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import type { PrimaryHandle } from '../types.js'
import type { ResolvedOptions } from '../options.js'
import { createLogger } from '../logger.js'
import { httpFds, namedFd, takeListenFds, type ListenFds } from '../systemd/listen-fds.js'
import { startNotify } from '../systemd/notify.js'
import { ACCEPT_ENV, ADDRESS_ENV, openOwnedListener, roundRobin, type OwnedListener } from './owned-listener.js'
import { createUpgrader, reportToOldPrimary, UPGRADE_FD_ENV } from './upgrade.js'
import { handOverControlPath } from './control.js'

/**
 * The primary's sockets and its talk with the service manager, wired around the supervisor:
 * sockets passed by systemd or by an old primary (LISTEN_FDS), the listener the primary owns
 * (owned-listener.ts), sd_notify (../systemd/notify.ts) and the upgrade (upgrade.ts, SIGUSR2).
 */
export interface PreparedPrimary {
  inherited?: ListenFds
  owned?: OwnedListener
  /** An inherited control socket (named nclust-control), to serve instead of binding the path. */
  controlFd?: number
  /** NOTIFY_SOCKET and WATCHDOG_USEC as given, for a new primary on upgrade. */
  systemdEnv: Record<string, string>
  upgraded: boolean
}

/** Before anything is forked: take the inherited sockets, open the owned listener (a port in use fails here). */
export async function preparePrimary (options: ResolvedOptions, env: NodeJS.ProcessEnv = process.env): Promise<PreparedPrimary> {
  const upgraded = env[UPGRADE_FD_ENV] !== undefined
  const inherited = takeListenFds(env)
  const systemdEnv: Record<string, string> = {}
  for (const k of ['NOTIFY_SOCKET', 'WATCHDOG_USEC']) { const v = env[k]; if (v !== undefined && v !== '') systemdEnv[k] = v }
  // From an upgrade, HTTP is only what the old primary named 'http' (a shared listener's name, say 'admin', is not).
  const http = inherited === undefined ? [] : upgraded ? inherited.fds.filter((_, i) => inherited.names[i] === 'http') : httpFds(inherited)
  let owned: OwnedListener | undefined
  // kernel balancing without inherited sockets: every worker binds with SO_REUSEPORT, the primary holds none.
  if (options.balance !== 'kernel' || http.length > 0) {
    // From an upgrading primary (which passes its address): accept only once this one is ready (owned-listener.ts).
    const from = upgraded && http.length > 0 ? env[ADDRESS_ENV] : undefined
    try {
      // balance 'sticky' places the connections itself (sticky.ts, given these servers by start.ts).
      owned = await openOwnedListener(options, options.balance === 'sticky' ? undefined : roundRobin(), http.length > 0 ? http : undefined,
        from !== undefined && from !== '' ? { address: from } : undefined)
    } catch (err) {
      // A port in use (or a bad inherited descriptor): one line in the log and on stderr, exit 1, nothing forked.
      const where = http.length > 0 ? `the inherited socket${http.length > 1 ? 's' : ''} (fd ${http.join(', ')})` : `${options.host}:${options.port}`
      const msg = `balance ${options.balance}: the primary cannot listen on ${where}: ${(err as Error).message}`
      createLogger(options.logger, 'primary', options.logFormat).fatal({ err, port: options.port, host: options.host }, msg)
      throw Object.assign(new Error(msg), { code: (err as { code?: string }).code ?? 'NCLUST_LISTEN' })
    }
    if (options.balance !== 'sticky') env[ACCEPT_ENV] = '1' // sticky workers take connections their own way (worker/listener.ts)
    env[ADDRESS_ENV] = owned.address
  }
  const controlFd = namedFd(inherited, 'nclust-control')
  return { ...(inherited !== undefined ? { inherited } : {}), ...(owned !== undefined ? { owned } : {}), ...(controlFd !== undefined ? { controlFd } : {}), systemdEnv, upgraded }
}

/**
 * Serve an inherited control socket (the old primary's, same path and inode). From an upgrade, not
 * before this primary is ready (see wirePrimary): until then `nclust status` answers from the old one.
 */
export async function adoptControl (fd: number, upgraded = false): Promise<Server> {
  const server = createServer()
  if (upgraded) return server
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ fd }, () => { server.off('error', reject); resolve() })
  })
  return server
}

/** How long after ready an inherited socket may wait for handle.inheritedListener before it is closed. */
const UNCLAIMED_GRACE_MS = 30_000

/** LISTEN_FDNAMES names nclust gives its own sockets: never a shared listener's. */
const RESERVED_NAMES = new Set(['http', 'nclust', 'nclust-control', 'unknown'])

/** A shared listener's name: one LISTEN_FDNAMES entry (no ':'), not one of nclust's own. Throws a TypeError naming it. */
export function checkSharedName (name: unknown): asserts name is string {
  if (typeof name !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(name) || RESERVED_NAMES.has(name)) {
    throw new TypeError(`invalid shareListener name: got ${JSON.stringify(name)}, expected 1-64 letters, digits, '.', '_' or '-', not http, nclust, nclust-control or unknown`)
  }
}

/**
 * SIGUSR2 upgrades the primary only under `nclust start` (cli.ts turns it on): an app that embeds
 * startClustered may use SIGUSR2 itself (nodemon sends it to restart); it has handle.upgrade() and
 * `nclust upgrade`.
 */
let upgradeOnSignal = false
export function enableUpgradeSignal (): void { upgradeOnSignal = true }

/** Once the supervisor runs: hand connections to it, speak to systemd, answer SIGUSR2 and `nclust upgrade`. */
export function wirePrimary (handle: PrimaryHandle, options: ResolvedOptions, prepared: PreparedPrimary, control?: Server): void {
  prepared.owned?.attach(handle)
  const notifier = startNotify(handle, process.env, { mainPid: prepared.upgraded })
  const shared = new Map<string, { server: Server, handedOver?: () => void }>()
  const upgrader = createUpgrader(handle, options, { ...(prepared.owned !== undefined ? { owned: prepared.owned } : {}), ...(control !== undefined ? { control } : {}), shared: () => shared, systemdEnv: prepared.systemdEnv, notifier }, () => {
    if (control === undefined || options.control === false) return
    handOverControlPath()
    // libuv unlinks a unix socket's path when the server that bound it closes, and the new primary
    // serves that very socket: keep a second name for the inode across the close, then put it back.
    const path = options.control
    const spare = `${path}.${process.pid}.upgrade`
    try { linkSync(path, spare) } catch {}
    control.close()
    try { renameSync(spare, path) } catch {}
  })
  handle.upgrade = async (opts) => await upgrader.upgrade(opts)
  handle.shareListener = (name, server, handedOver) => {
    checkSharedName(name)
    const entry = { server, ...(handedOver !== undefined ? { handedOver } : {}) }
    shared.set(name, entry)
    return () => { if (shared.get(name) === entry) shared.delete(name) }
  }
  // The inherited sockets that are neither HTTP nor control: for handle.inheritedListener, by name.
  const given = new Map<string, number>()
  const inherited = prepared.inherited
  if (inherited !== undefined) {
    const http = new Set(prepared.upgraded ? inherited.fds.filter((_, i) => inherited.names[i] === 'http') : httpFds(inherited))
    inherited.names.forEach((name, i) => {
      const fd = inherited.fds[i]
      if (fd !== undefined && !http.has(fd) && !RESERVED_NAMES.has(name) && !given.has(name)) given.set(name, fd)
    })
  }
  if (given.size > 0) {
    // A socket nobody took (the new code no longer serves it) would queue connections forever: close
    // it a while after ready, so its clients are refused instead of hanging (a late taker binds anew).
    handle.ready().then(() => {
      setTimeout(() => {
        for (const [name, fd] of given) {
          handle.logger.warn({ name, fd }, `inherited socket '${name}' (fd ${fd}) was not taken by handle.inheritedListener: closed`)
          try { closeSync(fd) } catch {}
        }
        given.clear()
      }, UNCLAIMED_GRACE_MS).unref()
    }, () => {})
  }
  handle.inheritedListener = (name) => {
    const fd = given.get(name)
    if (fd === undefined) return undefined
    given.delete(name)
    return { fd, fromUpgrade: prepared.upgraded }
  }
  if (options.handleSignals && upgradeOnSignal) {
    const onUsr2 = (): void => { void upgrader.upgrade() }
    process.on('SIGUSR2', onUsr2)
    handle.onClose(() => { process.removeListener('SIGUSR2', onUsr2) })
  }
  if (prepared.upgraded && prepared.controlFd !== undefined && control !== undefined) {
    // The path is the old primary's until this one is ready: a failed start must not unlink it.
    handOverControlPath(true)
    const fd = prepared.controlFd
    handle.ready().then(() => {
      control.listen({ fd }, () => { handOverControlPath(false) })
    }, () => {})
  }
  reportToOldPrimary(handle)
}

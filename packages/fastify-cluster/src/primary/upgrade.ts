import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, writeSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { accessSync, constants } from 'node:fs'
import type { Server } from 'node:net'
import type { PrimaryHandle } from '../types.js'
import type { ResolvedOptions } from '../options.js'
import type { Notifier } from '../systemd/notify.js'
import { SD_LISTEN_FDS_START } from '../systemd/listen-fds.js'
import { ACCEPT_ENV, ADDRESS_ENV, type OwnedListener } from './owned-listener.js'

/**
 * Replace the primary itself (`nclust upgrade`, SIGUSR2) without refusing a connection, the way
 * nginx's binary upgrade, HAProxy's `-x` and tableflip do it:
 *
 * 1. the old primary spawns the new one (same argv and working directory; `node` from PATH, or the
 *    binary given), detached (its own process group: a Ctrl-C or a kill of the old group misses it),
 *    passing the listening sockets from fd 3 on with LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID, the
 *    systemd convention the new one already reads (../systemd/listen-fds.ts), and a pipe at the fd
 *    after them (UPGRADE_FD_ENV) to report on;
 * 2. the new primary serves the same sockets (so both accept on one kernel queue for a moment),
 *    starts its workers and writes `ready <pid>` once every one is ready, or `failed <error>`;
 * 3. the old one stops accepting (its copies of the sockets close; the sockets stay open in the
 *    new), stops serving the control socket (the same socket: the path now answers from the new
 *    primary), drains its workers and exits.
 *
 * A new primary that fails, exits, or is not ready within the start bound is killed with its
 * workers, and the old one goes on serving; the caller gets the new one's error.
 * Under systemd the new primary says MAINPID=<its pid> (NotifyAccess=all) before the old one exits.
 */

export const UPGRADE_FD_ENV = 'NCLUST_UPGRADE_FD'
export const UPGRADE_FROM_ENV = 'NCLUST_UPGRADE_FROM'

export interface UpgradeResult { ok: boolean, pid?: number, error?: string, ms: number }

/** The `node` an upgrade runs: the one given, else the first `node` on PATH, else this one. */
export function upgradeNode (given: string | undefined, env: Record<string, string | undefined> = process.env, execPath = process.execPath): string {
  if (given !== undefined && given !== '') return given
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    const candidate = join(dir, 'node')
    try { accessSync(candidate, constants.X_OK); return candidate } catch {}
  }
  return execPath
}

/** How long the new primary gets to be ready: every try of every slot, plus time to load. Pure. */
export function upgradeDeadline (options: Pick<ResolvedOptions, 'startTimeout' | 'startRetries'>): number {
  return options.startTimeout * (options.startRetries + 1) + 10000
}

/** Parse one status line from the new primary. Pure. */
export function parseUpgradeLine (line: string): { ok: true, pid: number } | { ok: false, error: string } | undefined {
  const ready = /^ready (\d+)$/.exec(line)
  if (ready !== null) return { ok: true, pid: Number(ready[1]) }
  if (line.startsWith('failed ')) return { ok: false, error: line.slice(7) }
  return undefined
}

export interface UpgradeSources {
  owned?: OwnedListener
  control?: Server
  /** Listening servers of the primary's own registered by handle.shareListener (name → server), handed over too. */
  shared?: () => ReadonlyMap<string, { server: Server, handedOver?: () => void }>
  /** NOTIFY_SOCKET / WATCHDOG_* as systemd gave them (removed from process.env for the workers). */
  systemdEnv: Record<string, string>
  notifier?: Notifier
}

export interface Upgrader {
  upgrade (opts?: { node?: string }): Promise<UpgradeResult>
}

function fdOf (server: Server): number | undefined {
  const fd = (server as unknown as { _handle?: { fd?: number } | null })._handle?.fd
  return typeof fd === 'number' && fd >= 0 ? fd : undefined
}

export function createUpgrader (handle: PrimaryHandle, options: ResolvedOptions, sources: UpgradeSources, onControlHandedOver: () => void): Upgrader {
  const log = handle.logger
  let running: Promise<UpgradeResult> | undefined
  let done = false
  let shuttingDown = false
  let child: ChildProcess | undefined
  // A shutdown during an upgrade: the new primary goes too (it would otherwise serve on, detached).
  handle.events.on('shutdown', () => {
    shuttingDown = true
    if (!done && child?.pid !== undefined) try { process.kill(-child.pid, 'SIGKILL') } catch {}
  })

  async function run (opts: { node?: string }): Promise<UpgradeResult> {
    const started = Date.now()
    const fds: number[] = []
    const names: string[] = []
    for (const fd of sources.owned?.fds() ?? []) { fds.push(fd); names.push('http') }
    const controlFd = sources.control !== undefined ? fdOf(sources.control) : undefined
    if (controlFd !== undefined) { fds.push(controlFd); names.push('nclust-control') }
    const shared = [...(sources.shared?.().entries() ?? [])].filter(([, s]) => fdOf(s.server) !== undefined)
    for (const [name, s] of shared) { fds.push(fdOf(s.server) as number); names.push(name) }
    const node = upgradeNode(opts.node)
    const statusFd = SD_LISTEN_FDS_START + fds.length
    const env: NodeJS.ProcessEnv = { ...process.env, ...sources.systemdEnv, [UPGRADE_FD_ENV]: String(statusFd), [UPGRADE_FROM_ENV]: String(process.pid) }
    delete env[ACCEPT_ENV]
    // ADDRESS_ENV stays: the new primary serves the same socket, and reports this address before it accepts.
    if (sources.owned !== undefined) env[ADDRESS_ENV] = sources.owned.address
    else delete env[ADDRESS_ENV]
    if (fds.length > 0) { env.LISTEN_FDS = String(fds.length); env.LISTEN_FDNAMES = names.join(':') }
    log.info({ node, fds, names }, `upgrade: starting a new primary with ${node}`)
    try {
      // sh sets LISTEN_PID to the new primary's own pid (exec keeps it), as systemd does after its fork.
      child = spawn('/bin/sh', ['-c', 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"', node, ...process.execArgv, ...process.argv.slice(1)], {
        cwd: process.cwd(), env, detached: true, stdio: ['ignore', 'inherit', 'inherit', ...fds, 'pipe']
      })
    } catch (err) {
      return { ok: false, error: `cannot start a new primary: ${(err as Error).message}`, ms: Date.now() - started }
    }
    const spawned = child
    const pipe = spawned.stdio[statusFd]
    const verdict = await new Promise<{ ok: true, pid: number } | { ok: false, error: string }>((resolve) => {
      let buf = ''
      const timer = setTimeout(() => finish({ ok: false, error: `the new primary was not ready within ${upgradeDeadline(options)} ms` }), upgradeDeadline(options))
      function finish (v: { ok: true, pid: number } | { ok: false, error: string }): void {
        clearTimeout(timer)
        spawned.off('exit', onExit)
        resolve(v)
      }
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
        const said = parseUpgradeLine(buf.split('\n')[0] ?? '')
        finish(said?.ok === false ? said : { ok: false, error: `the new primary exited (${signal ?? `code ${String(code)}`}) before it was ready` })
      }
      spawned.on('exit', onExit)
      spawned.on('error', (err) => finish({ ok: false, error: `cannot start a new primary with ${node}: ${err.message}` }))
      pipe?.on('data', (d: Buffer) => {
        buf += d.toString('utf8')
        const nl = buf.indexOf('\n')
        if (nl === -1) return
        const said = parseUpgradeLine(buf.slice(0, nl))
        if (said !== undefined) finish(said)
      })
      pipe?.on('error', () => {})
    })
    pipe?.destroy()
    if (!verdict.ok) {
      // Kill the new primary and every worker it forked (its own process group); the old one keeps serving.
      try { if (spawned.pid !== undefined) process.kill(-spawned.pid, 'SIGKILL') } catch {}
      child = undefined // its pid may be reused: never signal that group again
      log.error({ error: verdict.error }, `upgrade failed: ${verdict.error}; this primary keeps serving`)
      return { ...verdict, ms: Date.now() - started }
    }
    if (shuttingDown) {
      try { if (spawned.pid !== undefined) process.kill(-spawned.pid, 'SIGKILL') } catch {}
      return { ok: false, error: 'this primary is shutting down', ms: Date.now() - started }
    }
    spawned.unref()
    done = true
    log.info({ pid: verdict.pid }, `upgrade: the new primary (pid ${verdict.pid}) is ready; this one stops accepting and drains its workers`)
    // From here the new primary speaks to systemd (it said MAINPID=); a STOPPING=1 from us would stop the unit.
    sources.notifier?.mute()
    await sources.owned?.stopAccepting()
    // The new primary serves the shared sockets now (same sockets: nothing queued is lost); requests in flight here finish.
    for (const [, s] of shared) {
      try { if (s.handedOver !== undefined) s.handedOver(); else s.server.close() } catch (err) { log.warn({ err }, 'upgrade: a shared listener failed to stop accepting') }
    }
    onControlHandedOver()
    return { ok: true, pid: verdict.pid, ms: Date.now() - started }
  }

  return {
    upgrade (opts = {}) {
      if (done) return Promise.resolve({ ok: false, error: 'this primary was already replaced', ms: 0 })
      if (shuttingDown) return Promise.resolve({ ok: false, error: 'this primary is shutting down', ms: 0 })
      running ??= run(opts).then((r) => {
        running = undefined
        if (r.ok) setImmediate(() => { void handle.close().then((code) => process.exit(code)) })
        return r
      })
      return running
    }
  }
}

/**
 * The new primary's side: when started by an upgrade, report `ready <pid>` once every worker is
 * ready, or `failed <the start error>`, on the pipe the old primary gave. Returns whether this
 * primary was started by an upgrade.
 */
export function reportToOldPrimary (handle: PrimaryHandle, env: NodeJS.ProcessEnv = process.env): boolean {
  const raw = env[UPGRADE_FD_ENV]
  delete env[UPGRADE_FD_ENV]
  delete env[UPGRADE_FROM_ENV]
  const fd = Number(raw)
  if (raw === undefined || !Number.isInteger(fd) || fd < 3) return false
  let lastError: string | undefined
  handle.events.on('start-failed', (e) => { lastError = `worker ${e.workerId} failed to start after ${e.tries} tries: ${e.error ?? e.reason}` })
  const say = (line: string): void => {
    try { writeSync(fd, `${line.replace(/\n/g, ' ')}\n`); closeSync(fd) } catch {}
  }
  handle.ready().then(() => say(`ready ${process.pid}`), (err: unknown) => say(`failed ${lastError ?? (err instanceof Error ? err.message : String(err))}`))
  return true
}

import { execFile } from 'node:child_process'
import type { Logger } from 'pino'
import type { PrimaryHandle } from '../types.js'

/**
 * sd_notify(3) from the primary: READY=1 once every worker is ready (never after a failed start, so
 * `systemctl start` fails with the error), RELOADING=1 + MONOTONIC_USEC … READY=1 around a rolling
 * reload (`Type=notify-reload`), STOPPING=1, a STATUS= line, WATCHDOG=1 when WatchdogSec is set,
 * and MAINPID= after an upgrade.
 *
 * How it is sent: Node has no AF_UNIX SOCK_DGRAM socket, so the datagram goes through the host's own
 * `systemd-notify` (systemd's sd_pid_notify, installed wherever systemd runs; no native addon to build
 * per Node version, which would also be lost on a Node upgrade of the primary). Its known weakness is
 * that the datagram comes from the helper's pid: systemd-notify sends it with our pid in its
 * credentials (as root it may; `--pid`), and the units nclust writes set `NotifyAccess=all`, which an
 * upgrade needs anyway (the new primary speaks before it is the main PID). One short process per
 * message: a start, a reload, a stop, and a watchdog ping every WatchdogSec/2 — not per request.
 * Messages are sent one at a time, in order.
 */

export interface Notifier {
  /** Send `KEY=VALUE` lines (in order with every earlier call); resolves when sent or given up. */
  send: (...lines: string[]) => Promise<void>
  readonly enabled: boolean
  /** Say nothing more (an upgraded-away primary: the new one speaks for the service). */
  mute: () => void
}

/** CLOCK_MONOTONIC in µs: what RELOADING=1 must carry (Node's hrtime is CLOCK_MONOTONIC on Linux). */
export function monotonicUsec (): string {
  return (process.hrtime.bigint() / 1000n).toString()
}

/** The watchdog ping period for WATCHDOG_USEC/WATCHDOG_PID, or undefined when not asked of this process. */
export function watchdogInterval (env: Record<string, string | undefined>, pid: number): number | undefined {
  const usec = Number(env.WATCHDOG_USEC)
  if (!Number.isInteger(usec) || usec <= 0) return undefined
  if (env.WATCHDOG_PID !== undefined && env.WATCHDOG_PID !== '' && Number(env.WATCHDOG_PID) !== pid) return undefined
  return Math.max(1, Math.floor(usec / 2000))
}

/** The STATUS= line: what `systemctl status` shows under the unit. */
export function statusLine (ready: number, size: number, generation: number, pid: number): string {
  return `STATUS=${ready}/${size} workers ready, generation ${generation}, primary pid ${pid}`
}

export function createNotifier (socket: string | undefined, log?: Logger, binary = 'systemd-notify'): Notifier {
  let chain: Promise<void> = Promise.resolve()
  let warned = false
  let muted = false
  const enabled = socket !== undefined && socket !== ''
  return {
    enabled,
    mute () { muted = true },
    send (...lines) {
      if (!enabled || muted) return Promise.resolve()
      chain = chain.then(() => new Promise<void>((resolve) => {
        // --pid: the datagram carries this process as its sender (and MAINPID= when it differs from
        // our parent, which is what an upgraded primary wants); without it systemd-notify uses its parent, us too.
        const args = lines.some((l) => l.startsWith('MAINPID=')) ? [`--pid=${process.pid}`, ...lines.filter((l) => !l.startsWith('MAINPID='))] : lines
        execFile(binary, args, { env: { NOTIFY_SOCKET: socket, PATH: process.env.PATH ?? '/usr/bin:/bin' }, timeout: 5000 }, (err) => {
          if (err !== null && !warned) {
            warned = true
            log?.warn({ err }, `sd_notify: ${binary} failed (${err.message.split('\n')[0] ?? ''}); systemd will not hear from this primary`)
          }
          resolve()
        })
      }))
      return chain
    }
  }
}

/**
 * Speak for `handle` to systemd. `env` is read once; NOTIFY_SOCKET and WATCHDOG_* are removed from
 * process.env so the workers (and their apps) never notify in the primary's name.
 */
export function startNotify (handle: PrimaryHandle, env: NodeJS.ProcessEnv = process.env, opts: { mainPid?: boolean, binary?: string } = {}): Notifier {
  const socket = env.NOTIFY_SOCKET
  const wd = watchdogInterval(env, process.pid)
  for (const k of ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID']) delete env[k]
  const n = createNotifier(socket, handle.logger, opts.binary)
  if (!n.enabled) return n
  let generation = 1
  let ready = false
  const status = (): string => {
    const ws = handle.workers()
    generation = Math.max(generation, ...ws.map((w) => w.generation))
    return statusLine(ws.filter((w) => w.state === 'ready').length, handle.size, generation, process.pid)
  }
  handle.ready().then(() => {
    ready = true
    void n.send('READY=1', status(), ...(opts.mainPid === true ? [`MAINPID=${process.pid}`] : []))
  }, () => {}) // a failed start never says READY: systemd sees the primary exit 1
  handle.events.on('reload', (e) => {
    if (!ready) return
    if (e.phase === 'start') void n.send('RELOADING=1', `MONOTONIC_USEC=${monotonicUsec()}`, 'STATUS=reloading')
    else void n.send('READY=1', status())
  })
  handle.events.on('worker-ready', () => { if (ready) void n.send(status()) })
  handle.events.on('shutdown', () => { void n.send('STOPPING=1', 'STATUS=stopping: draining the workers') })
  if (wd !== undefined) {
    const timer = setInterval(() => { void n.send('WATCHDOG=1') }, wd)
    timer.unref()
    handle.onClose(() => clearInterval(timer))
  }
  return n
}

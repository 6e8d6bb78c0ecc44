import { isAbsolute, resolve } from 'node:path'
import type { ResolvedOptions } from '../options.js'

/**
 * `nclust systemd ./app.js [flags]`: a service unit (and a socket unit) for the user's own app, the
 * way `pm2 startup` writes one for PM2: the example's hardening (examples/clustered-api/deploy/), and
 * timeouts computed from the app's options instead of guessed:
 *
 * - TimeoutStopSec above the shutdown deadline (the primary SIGKILLs stragglers at shutdownTimeout,
 *   then exits; systemd's own SIGKILL comes only after that, as a backstop);
 * - TimeoutStartSec (which also bounds ExecReload) above the start bound (every slot gets
 *   startTimeout × (startRetries + 1)) and the rolling-reload bound (one slot after another);
 * - Type=notify + NotifyAccess=all: READY=1 once every worker is ready, RELOADING=1/READY=1 around a
 *   reload, and MAINPID= from a new primary after `nclust upgrade` (it is not the main PID until then);
 * - a .socket unit: systemd owns the listening socket, so `systemctl restart` refuses nothing
 *   (connections wait in the backlog) and the primary serves the socket it is given (LISTEN_FDS).
 *
 * Pure: the caller resolves the options and paths; a test runs `systemd-analyze verify` on the output.
 */

export interface UnitInput {
  name: string
  /** Absolute path of the app module. */
  app: string
  /** Absolute path of the node binary and of the nclust bin. */
  node: string
  nclust: string
  workingDirectory: string
  user?: string
  /** The flags given after `nclust systemd`, passed on to `nclust start` as they were. */
  flags: string[]
  options: Pick<ResolvedOptions, 'workers' | 'port' | 'host' | 'shutdownTimeout' | 'startTimeout' | 'startRetries'>
  /** WatchdogSec=, 0 for none. */
  watchdogSec: number
  socket: boolean
}

/** Seconds, rounded up. */
const sec = (ms: number): number => Math.ceil(ms / 1000)

/** The longest a rolling reload may take: each slot's new worker gets every start try, then the old one drains. */
export function reloadBoundMs (o: UnitInput['options']): number {
  return o.workers * o.startTimeout * (o.startRetries + 1) + o.shutdownTimeout
}

/** systemd's quoting for an ExecStart= argument: plain when safe, else double-quoted with escapes. */
export function execArg (arg: string): string {
  if (/^[\w@%+=:,./-]+$/.test(arg) && !arg.includes('%')) return arg
  return `"${arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%').replace(/\$/g, '$$$$')}"`
}

export function unitNameOk (name: string): boolean {
  return /^[A-Za-z0-9:_.\\-]+$/.test(name) && name.length <= 200
}

export function renderService (u: UnitInput): string {
  if (!isAbsolute(u.app) || !isAbsolute(u.node) || !isAbsolute(u.nclust) || !isAbsolute(u.workingDirectory)) throw new Error('paths must be absolute')
  const o = u.options
  const reload = reloadBoundMs(o)
  const start = o.startTimeout * (o.startRetries + 1)
  const underHome = u.workingDirectory === '/home' || u.workingDirectory.startsWith('/home/') || u.workingDirectory.startsWith('/root')
  const exec = (args: string[]): string => args.map(execArg).join(' ')
  return `# ${u.name}: ${u.app} on every core with nclust (written by \`nclust systemd\`).
#   install:  save as /etc/systemd/system/${u.name}.service${u.socket ? ` (and ${u.name}.socket beside it)` : ''},
#             systemctl daemon-reload && systemctl enable --now ${u.name}${u.socket ? '.socket' : ''} ${u.name}.service
#   deploy:   systemctl reload ${u.name}       rolling reload; fails (old workers serve on) when the new code cannot start
#   upgrade:  systemctl kill -s USR2 --kill-whom=main ${u.name}, or nclust upgrade (as the unit's user):
#             a new primary (new Node, new nclust) takes over the sockets; nothing is refused
#   restart:  systemctl restart ${u.name}${u.socket ? '      the socket stays open: connections wait in the backlog' : ''}
# Timeouts from the options: shutdownTimeout ${o.shutdownTimeout} ms, ${o.workers} workers, startTimeout ${o.startTimeout} ms × ${o.startRetries + 1} tries.

[Unit]
Description=${u.name} (Fastify on every core, nclust)
Wants=network-online.target
After=network-online.target${u.socket ? `\nRequires=${u.name}.socket\nAfter=${u.name}.socket` : ''}

[Service]
# notify: READY=1 once every worker is ready (a start that fails never says it, so systemctl start fails);
# all: a new primary after an upgrade says MAINPID= before it is the main process.
Type=notify
NotifyAccess=all
${u.user !== undefined ? `User=${u.user}\n` : ''}WorkingDirectory=${u.workingDirectory}
Environment=NODE_ENV=production
# The control socket (nclust status / reload / upgrade) in a private runtime folder.
RuntimeDirectory=${u.name}
RuntimeDirectoryMode=0700
Environment=NCLUST_CONTROL=%t/${u.name}/control.sock
ExecStart=${exec([u.node, u.nclust, 'start', ...u.flags, u.app])}
# Waits for the verdict of the rolling reload (bound: ${sec(reload)} s).
ExecReload=${exec([u.node, u.nclust, 'reload', '--timeout', String(reload)])}
# Start (${sec(start)} s per slot) and reload (${sec(reload)} s) bounds, plus margin; TimeoutStartSec also bounds ExecReload.
TimeoutStartSec=${Math.max(sec(start), sec(reload)) + 30}
# SIGTERM to the primary only: it drains every worker within shutdownTimeout (${sec(o.shutdownTimeout)} s), then exits.
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=${sec(o.shutdownTimeout) + 15}
${u.watchdogSec > 0 ? `# The primary pings every WatchdogSec/2 while its event loop runs.\nWatchdogSec=${u.watchdogSec}\n` : ''}Restart=on-failure
RestartSec=5
# Hardening that costs the app nothing.
NoNewPrivileges=true
PrivateTmp=true
ProtectSystem=strict
ProtectHome=${underHome ? 'read-only' : 'true'}
StateDirectory=${u.name}
StateDirectoryMode=0700
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`
}

export function renderSocket (u: UnitInput): string {
  const host = u.options.host
  const listen = host.includes(':') ? `[${host}]:${u.options.port}` : `${host}:${u.options.port}`
  return `# ${u.name}.socket: systemd holds the listening socket, so a restart of ${u.name}.service refuses
# nothing (connections wait in the backlog); nclust serves it (LISTEN_FDS) and balances over its workers.

[Unit]
Description=${u.name} listening socket

[Socket]
ListenStream=${listen}
FileDescriptorName=http
NoDelay=true
Backlog=4096

[Install]
WantedBy=sockets.target
`
}

/** Resolve the command-line parts into absolute paths. */
export function absolute (path: string, cwd: string): string {
  return isAbsolute(path) ? path : resolve(cwd, path)
}

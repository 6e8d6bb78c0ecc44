import type { LoggerOptions, Logger } from 'pino'
import type { BackoffPolicy, CrashLoopPolicy } from './primary/backoff.js'
import { DRAIN_DEFAULTS } from '@nclust/fastify-drain/defaults'
import { errors } from './errors.js'
import { defaultWorkerCount } from './cgroup.js'
import { BALANCE_VALUES, kernelBalanceUnsupported, type Balance } from './balance.js'
import { logFormat, type LogFormat } from './logger.js'
import { defaultReportDirectory } from './probe.js'
import { isAbsolute } from 'node:path'
import { defaultControlPath, resolveControlPath } from './control-protocol.js'

/** Options of `startClustered`. Each may also come from the env var named in {@link OPTION_TABLE}; an explicit option wins. */
export interface ClusterOptions {
  /** Worker processes; 1 runs the app in-process with no fork. Env `WORKER_COUNT`. */
  workers?: number
  /** Port every worker listens on (0: one random port shared by all workers). Env `PORT`. */
  port?: number
  /** Address to listen on. Env `HOST`. */
  host?: string
  /**
   * Who spreads new connections over the workers. `'primary'`: the primary accepts each connection and
   * passes it to a worker round-robin over IPC (node:cluster's default). `'kernel'`: every worker
   * listens with `reusePort: true` and the kernel spreads connections by hash (Linux, Node 22.12+/23.1+).
   * `'sticky'`: the primary accepts and hands every connection from one client address to the same
   * worker (Socket.IO long-polling, in-memory sessions). Env `NCLUST_BALANCE`.
   */
  balance?: Balance
  /** Graceful shutdown deadline in ms; a worker still alive then is SIGKILLed. Env `SHUTDOWN_TIMEOUT`. */
  shutdownTimeout?: number
  /** A worker not ready within this many ms is killed and counts as a failed start. */
  startTimeout?: number
  /**
   * Retries a slot that has never been ready gets after a failed start (an error in `buildApp` or
   * `listen`, a crash or a start timeout) before the cluster gives up: it stops and exits 1, with the
   * error and its stack printed once. Default 2 (3 tries in all). Env `START_RETRIES`.
   */
  startRetries?: number
  /** How often a ready worker sends a heartbeat from its event loop, ms (default 1000). */
  heartbeatInterval?: number
  /**
   * A ready worker silent this long (ms) is hung: its stack is captured in a diagnostic report (see `hangProbe`), it is
   * SIGKILLed and replaced. Default 30000; 0 turns the watchdog off. Env `HEARTBEAT_TIMEOUT`.
   */
  heartbeatTimeout?: number
  /**
   * Folder for the watchdog's diagnostic reports of hung workers (absolute path; created 0700 if missing;
   * refused at report time if another user owns it or group/others may write to it). Default: Node's
   * `--report-directory` when given, else `$XDG_STATE_HOME/nclust/reports` or `~/.local/state/nclust/reports`.
   * Env `NCLUST_REPORT_DIR`.
   */
  reportDirectory?: string
  /**
   * How a hung worker's stack is taken. `'on-hang'` (default): nothing runs until a worker hangs; then the
   * primary starts that worker's inspector (SIGUSR1; workers are forked with `--inspect-port=127.0.0.1:0`),
   * pauses it over loopback, reads the frames and a diagnostic report, and SIGKILLs it (the port is open
   * for that capture only, bounded by 5 s). `'always'`: a hang-probe thread in every worker answers over a
   * private unix socket (no TCP port; ~10 MB of RSS per worker). `'off'`: no stack. `'after-hang'` is the
   * former default, now read as `'on-hang'`. The watchdog kills and replaces hung workers in every mode.
   * Env `NCLUST_HANG_PROBE`.
   */
  hangProbe?: HangProbe
  /** At most this many nclust report files (hang reports, `nclust diagnose` output) in `reportDirectory`; the oldest are removed first. Default 20. Env `NCLUST_REPORT_MAX_FILES`. */
  reportMaxFiles?: number
  /** At most this many bytes of them (the newest file is always kept). Default 536870912 (512 MiB). Env `NCLUST_REPORT_MAX_BYTES`. */
  reportMaxBytes?: number
  /** Recycle a worker after this many requests (surge-first, like a reload); 0 (default) is off. Env `MAX_REQUESTS`. */
  maxRequests?: number
  /** Add 0..maxRequestsJitter (random, per worker) to `maxRequests` so workers do not all recycle together. */
  maxRequestsJitter?: number
  /** Recycle a worker whose resident memory passes this many MB (sampled with each heartbeat); 0 (default) is off. Env `MAX_RSS`. */
  maxRss?: number
  /** Restart delays: exponential from `initialDelay` to `maxDelay`, reset after `resetAfter` ms of uptime. */
  restartBackoff?: Partial<BackoffPolicy>
  /** Stop respawning when one slot fails `maxFailures` times within `window` ms: the primary exits 1. */
  crashLoop?: Partial<CrashLoopPolicy>
  /**
   * Register `@nclust/fastify-drain` on the app each worker builds (skipped when the app already has it).
   * `true` (default) uses a drain deadline a little below `shutdownTimeout`; an object is passed to the plugin; `false` opts out.
   */
  drain?: boolean | Record<string, unknown>
  /**
   * A pino logger, pino options, or `false` for silence. Default: pino at `LOG_LEVEL` (info), human-readable
   * lines (pino-pretty) when stdout is a terminal and JSON otherwise; `NCLUST_LOG_FORMAT=pretty|json` forces either.
   */
  logger?: Logger | LoggerOptions | false
  /** Install SIGTERM/SIGINT handlers (default true). Tests and embedders may drive `close()` themselves. */
  handleSignals?: boolean
  /**
   * The primary's control socket for `nclust status|reload|scale|stop|diagnose`: a unix socket path,
   * or `false` for none. Default: a per-user private folder, a name hashed from cwd, argv and port.
   * Env `NCLUST_CONTROL` (`false` turns it off).
   */
  control?: string | false
  /** Where env vars are read from (default `process.env`). */
  env?: Record<string, string | undefined>
}

export const HANG_PROBE_VALUES = ['on-hang', 'always', 'off', 'after-hang'] as const
export type HangProbe = typeof HANG_PROBE_VALUES[number]

export interface ResolvedOptions {
  workers: number
  /** How `workers` was chosen, for the start line: `WORKER_COUNT`, `option workers`, `cgroup quota 2.0 CPUs of 64 cores`. */
  workersFrom: string
  port: number
  host: string
  balance: Balance
  shutdownTimeout: number
  startTimeout: number
  startRetries: number
  heartbeatInterval: number
  heartbeatTimeout: number
  /** Where hang reports go (absolute). */
  reportDirectory: string
  /** True when {@link reportDirectory} is the private default (then tightened to 0700 if looser). */
  reportDirectoryIsDefault: boolean
  /** `'after-hang'` is resolved to `'on-hang'`. */
  hangProbe: Exclude<HangProbe, 'after-hang'>
  reportMaxFiles: number
  reportMaxBytes: number
  maxRequests: number
  maxRequestsJitter: number
  maxRss: number
  restartBackoff: BackoffPolicy
  crashLoop: CrashLoopPolicy
  drain: false | Record<string, unknown>
  logger: Logger | LoggerOptions | false | undefined
  /** How loggers built from options print: `pretty` on a terminal, `json` otherwise (env `NCLUST_LOG_FORMAT`). */
  logFormat: LogFormat
  handleSignals: boolean
  /** Absolute path of the control socket, or false. */
  control: string | false
  /** True when {@link control} is the default path (no option, flag or env): a folder that cannot be made there turns the socket off with a warning instead of failing the start. */
  controlIsDefault: boolean
}

const MAX_MS = 2 ** 31 - 1 // setTimeout's ceiling
const MAX_SOCKET_PATH = 107 // sun_path holds 108 bytes with its NUL

/**
 * The one list of options, env vars and defaults. The package README's table is checked against
 * it by a test, so docs and code cannot drift.
 */
export const OPTION_TABLE = [
  { option: 'workers', env: 'WORKER_COUNT', default: 'os.availableParallelism(), capped by a cgroup CPU quota', allowed: 'an integer from 1 to 1024' },
  { option: 'port', env: 'PORT', default: '3000', allowed: 'an integer from 0 to 65535' },
  { option: 'host', env: 'HOST', default: '0.0.0.0', allowed: 'a non-empty host name or address' },
  { option: 'balance', env: 'NCLUST_BALANCE', default: 'primary', allowed: '"primary", "kernel" (Linux, Node 22.12+/23.1+, a fixed port, not host localhost) or "sticky" (by client address)' },
  { option: 'shutdownTimeout', env: 'SHUTDOWN_TIMEOUT', default: '30000', allowed: `an integer number of ms from 1 to ${MAX_MS}` },
  { option: 'startTimeout', env: null, default: '30000', allowed: `an integer number of ms from 1 to ${MAX_MS}` },
  { option: 'startRetries', env: 'START_RETRIES', default: '2', allowed: 'an integer from 0 to 100' },
  { option: 'heartbeatInterval', env: null, default: '1000', allowed: `an integer number of ms from 10 to ${MAX_MS}` },
  { option: 'heartbeatTimeout', env: 'HEARTBEAT_TIMEOUT', default: '30000', allowed: `0 (off) or an integer number of ms above heartbeatInterval, up to ${MAX_MS}` },
  { option: 'reportDirectory', env: 'NCLUST_REPORT_DIR', default: '$XDG_STATE_HOME/nclust/reports, else ~/.local/state/nclust/reports (private, 0700)', allowed: 'an absolute path' },
  { option: 'hangProbe', env: 'NCLUST_HANG_PROBE', default: 'on-hang', allowed: '"on-hang", "always", "off" or "after-hang" (read as "on-hang")' },
  { option: 'reportMaxFiles', env: 'NCLUST_REPORT_MAX_FILES', default: '20', allowed: 'an integer from 1 to 100000' },
  { option: 'reportMaxBytes', env: 'NCLUST_REPORT_MAX_BYTES', default: '536870912', allowed: 'an integer number of bytes from 1 to 2^53-1' },
  { option: 'maxRequests', env: 'MAX_REQUESTS', default: '0', allowed: '0 (off) or a positive integer' },
  { option: 'maxRequestsJitter', env: null, default: '0', allowed: 'a non-negative integer' },
  { option: 'maxRss', env: 'MAX_RSS', default: '0', allowed: 'MB: 0 (off) or a positive integer' },
  { option: 'restartBackoff', env: null, default: '{ initialDelay: 100, maxDelay: 15000, factor: 2, resetAfter: 60000 }', allowed: 'an object of non-negative integers (factor >= 1)' },
  { option: 'crashLoop', env: null, default: '{ maxFailures: 10, window: 60000 }', allowed: 'an object of positive integers' },
  { option: 'drain', env: null, default: 'true', allowed: 'true, false or @nclust/fastify-drain options' },
  { option: 'logger', env: 'LOG_LEVEL (level), NCLUST_LOG_FORMAT (pretty or json)', default: 'pino at level info; pretty on a terminal, JSON otherwise', allowed: 'a pino logger, pino options or false' },
  { option: 'handleSignals', env: null, default: 'true', allowed: 'a boolean' },
  { option: 'control', env: 'NCLUST_CONTROL', default: '$XDG_RUNTIME_DIR/nclust/<hash>.sock, else ~/.nclust/run/<hash>.sock', allowed: `a unix socket path (at most ${MAX_SOCKET_PATH} bytes) in a folder only its user may write, or false` },
  { option: 'env', env: null, default: 'process.env', allowed: 'an object of strings' }
] as const

export const DEFAULTS = {
  port: 3000,
  host: '0.0.0.0',
  balance: 'primary' as Balance,
  shutdownTimeout: 30000,
  startTimeout: 30000,
  startRetries: 2,
  heartbeatInterval: 1000,
  heartbeatTimeout: 30000,
  maxRequests: 0,
  maxRequestsJitter: 0,
  maxRss: 0,
  restartBackoff: { initialDelay: 100, maxDelay: 15000, factor: 2, resetAfter: 60000 },
  crashLoop: { maxFailures: 10, window: 60000 },
  reportMaxFiles: 20,
  reportMaxBytes: 512 * 1024 * 1024
} as const

const KNOWN = new Set<string>(OPTION_TABLE.map((o) => o.option))

function invalid (name: string, value: unknown, allowed: string): Error {
  const shown = typeof value === 'string' ? JSON.stringify(value) : String(value)
  return new errors.NCLUST_INVALID_OPTION(`invalid ${name}: got ${shown}, expected ${allowed}`)
}

/** Parse an integer strictly: "12" yes; "12abc", "1.5", "", " " no. */
function toInteger (value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) ? value : undefined
  if (typeof value === 'string' && /^[+-]?\d+$/.test(value.trim())) return Number(value.trim())
  return undefined
}

type IntegerOption = 'workers' | 'port' | 'shutdownTimeout' | 'startTimeout' | 'startRetries' | 'heartbeatInterval' |
  'heartbeatTimeout' | 'maxRequests' | 'maxRequestsJitter' | 'maxRss' | 'reportMaxFiles' | 'reportMaxBytes'

/** An integer option that may come from env: the explicit option wins; the error names whichever was used. */
function integer (
  options: ClusterOptions, env: Record<string, string | undefined>,
  key: IntegerOption, envName: string | null,
  min: number, max: number, fallback: number
): number {
  const fromOption = options[key] !== undefined
  const raw: unknown = fromOption ? options[key] : (envName !== null ? env[envName] : undefined)
  if (raw === undefined || (!fromOption && raw === '')) return fallback
  const row = OPTION_TABLE.find((o) => o.option === key)
  const label = fromOption ? `option "${key}"` : `env ${envName ?? key}`
  const n = toInteger(raw)
  if (n === undefined || n < min || n > max) throw invalid(label, raw, row?.allowed ?? `an integer from ${min} to ${max}`)
  return n
}

function policy<T extends object> (name: string, value: unknown, defaults: T, check: (k: string, v: number) => boolean, allowed: string): T {
  if (value === undefined) return { ...defaults }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid(`option "${name}"`, value, allowed)
  const out: Record<string, number> = { ...(defaults as Record<string, number>) }
  for (const [k, v] of Object.entries(value)) {
    if (!(k in defaults)) throw new errors.NCLUST_UNKNOWN_OPTION(`unknown option "${name}.${k}", expected one of: ${Object.keys(defaults).join(', ')}`)
    if (v === undefined) continue
    if (typeof v !== 'number' || !Number.isFinite(v) || !check(k, v)) throw invalid(`option "${name}.${k}"`, v, allowed)
    out[k] = v
  }
  return out as T
}

/**
 * Resolve and validate every option and env var, before anything is forked.
 * Throws `NCLUST_INVALID_OPTION` / `NCLUST_UNKNOWN_OPTION` with one line naming the option or env
 * var, the bad value and what is allowed.
 */
export function resolveOptions (options: ClusterOptions = {}): ResolvedOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalid('options', options, 'an object')
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) throw new errors.NCLUST_UNKNOWN_OPTION(`unknown option "${key}", expected one of: ${[...KNOWN].join(', ')}`)
  }
  const env = options.env ?? process.env
  if (typeof env !== 'object' || env === null) throw invalid('option "env"', env, 'an object of strings')

  const workers = integer(options, env, 'workers', 'WORKER_COUNT', 1, 1024, 0)
  const workersFrom = options.workers !== undefined ? 'option workers' : workers !== 0 ? 'WORKER_COUNT' : undefined
  const port = integer(options, env, 'port', 'PORT', 0, 65535, DEFAULTS.port)
  const shutdownTimeout = integer(options, env, 'shutdownTimeout', 'SHUTDOWN_TIMEOUT', 1, MAX_MS, DEFAULTS.shutdownTimeout)
  const startTimeout = integer(options, env, 'startTimeout', null, 1, MAX_MS, DEFAULTS.startTimeout)
  const startRetries = integer(options, env, 'startRetries', 'START_RETRIES', 0, 100, DEFAULTS.startRetries)
  const heartbeatInterval = integer(options, env, 'heartbeatInterval', null, 10, MAX_MS, DEFAULTS.heartbeatInterval)
  const heartbeatTimeout = integer(options, env, 'heartbeatTimeout', 'HEARTBEAT_TIMEOUT', 0, MAX_MS, DEFAULTS.heartbeatTimeout)
  if (heartbeatTimeout !== 0 && heartbeatTimeout <= heartbeatInterval) {
    const label = options.heartbeatTimeout !== undefined ? 'option "heartbeatTimeout"' : 'env HEARTBEAT_TIMEOUT'
    throw invalid(label, heartbeatTimeout, `0 (off) or a value above heartbeatInterval (${heartbeatInterval})`)
  }
  const reportFromOption = options.reportDirectory !== undefined
  const reportRaw: unknown = reportFromOption ? options.reportDirectory : (env.NCLUST_REPORT_DIR === '' ? undefined : env.NCLUST_REPORT_DIR)
  if (reportRaw !== undefined && (typeof reportRaw !== 'string' || !isAbsolute(reportRaw))) {
    throw invalid(reportFromOption ? 'option "reportDirectory"' : 'env NCLUST_REPORT_DIR', reportRaw, 'an absolute path')
  }
  // Node's own --report-directory, when the operator gave one, comes next; then the private default.
  const nodeReportDir = process.report?.directory
  const reportDirectory = reportRaw as string | undefined ?? (nodeReportDir !== undefined && nodeReportDir !== '' ? nodeReportDir : undefined)
  const hangFromOption = options.hangProbe !== undefined
  const hangRaw: unknown = hangFromOption ? options.hangProbe : (env.NCLUST_HANG_PROBE === '' ? undefined : env.NCLUST_HANG_PROBE)
  if (hangRaw !== undefined && (typeof hangRaw !== 'string' || !(HANG_PROBE_VALUES as readonly string[]).includes(hangRaw))) {
    throw invalid(hangFromOption ? 'option "hangProbe"' : 'env NCLUST_HANG_PROBE', hangRaw, '"on-hang", "always", "off" or "after-hang"')
  }
  const reportMaxFiles = integer(options, env, 'reportMaxFiles', 'NCLUST_REPORT_MAX_FILES', 1, 100000, DEFAULTS.reportMaxFiles)
  const reportMaxBytes = integer(options, env, 'reportMaxBytes', 'NCLUST_REPORT_MAX_BYTES', 1, Number.MAX_SAFE_INTEGER, DEFAULTS.reportMaxBytes)
  const maxRequests = integer(options, env, 'maxRequests', 'MAX_REQUESTS', 0, Number.MAX_SAFE_INTEGER, DEFAULTS.maxRequests)
  const maxRequestsJitter = integer(options, env, 'maxRequestsJitter', null, 0, Number.MAX_SAFE_INTEGER, DEFAULTS.maxRequestsJitter)
  const maxRss = integer(options, env, 'maxRss', 'MAX_RSS', 0, 1024 * 1024, DEFAULTS.maxRss)

  // An empty env var counts as unset, like the integer ones (HOST= in a compose file or a shell export).
  const hostRaw: unknown = options.host !== undefined ? options.host : (env.HOST === '' ? undefined : env.HOST)
  if (hostRaw !== undefined && (typeof hostRaw !== 'string' || hostRaw.trim() === '')) {
    throw invalid(options.host !== undefined ? 'option "host"' : 'env HOST', hostRaw, 'a non-empty host name or address')
  }
  const host = typeof hostRaw === 'string' ? hostRaw.trim() : DEFAULTS.host

  const balanceFromOption = options.balance !== undefined
  const balanceRaw: unknown = balanceFromOption ? options.balance : env.NCLUST_BALANCE
  const balanceLabel = balanceFromOption ? 'option "balance"' : 'env NCLUST_BALANCE'
  let balance: Balance = DEFAULTS.balance
  if (balanceRaw !== undefined && (balanceFromOption || balanceRaw !== '')) {
    if (typeof balanceRaw !== 'string' || !(BALANCE_VALUES as readonly string[]).includes(balanceRaw)) {
      throw invalid(balanceLabel, balanceRaw, '"primary", "kernel" or "sticky"')
    }
    balance = balanceRaw as Balance
  }
  if (balance === 'kernel') {
    const why = kernelBalanceUnsupported()
    if (why !== undefined) throw invalid(balanceLabel, balance, `"primary" here: ${why}`)
    if (host === 'localhost') throw invalid(balanceLabel, balance, '"primary" with host localhost (Fastify binds it twice, 127.0.0.1 and ::1): give an address')
    if (port === 0) throw invalid(balanceLabel, balance, '"primary" with port 0: with kernel balancing each worker would get its own random port; give a fixed port')
  }

  const restartBackoff = policy<BackoffPolicy>('restartBackoff', options.restartBackoff, DEFAULTS.restartBackoff,
    (k, v) => k === 'factor' ? v >= 1 : Number.isInteger(v) && v >= 0 && v <= MAX_MS,
    'a non-negative integer of ms (factor: a number >= 1)')
  if (restartBackoff.maxDelay < restartBackoff.initialDelay) {
    throw invalid('option "restartBackoff.maxDelay"', restartBackoff.maxDelay, `a value >= restartBackoff.initialDelay (${restartBackoff.initialDelay})`)
  }
  const crashLoop = policy<CrashLoopPolicy>('crashLoop', options.crashLoop, DEFAULTS.crashLoop,
    (_k, v) => Number.isInteger(v) && v >= 1 && v <= MAX_MS, 'a positive integer')

  let drain: false | Record<string, unknown>
  if (options.drain === undefined || options.drain === true) drain = {}
  else if (options.drain === false) drain = false
  else if (typeof options.drain === 'object' && options.drain !== null && !Array.isArray(options.drain)) drain = { ...options.drain }
  else throw invalid('option "drain"', options.drain, 'true, false or an object of @nclust/fastify-drain options')

  const minShutdown = minShutdownTimeout(drain)
  if (shutdownTimeout < minShutdown) {
    const fromOption = options.shutdownTimeout !== undefined
    throw invalid(fromOption ? 'option "shutdownTimeout"' : 'env SHUTDOWN_TIMEOUT', fromOption ? options.shutdownTimeout : env.SHUTDOWN_TIMEOUT,
      `at least ${minShutdown} ms: the drain's deadline (shutdownTimeout minus min(5 s, 10 %)) must exceed its linger ` +
      `(${lingerOf(drain as Record<string, unknown>)} ms) and delay, or every worker fails at start`)
  }

  if (options.handleSignals !== undefined && typeof options.handleSignals !== 'boolean') {
    throw invalid('option "handleSignals"', options.handleSignals, 'a boolean')
  }
  const logger = options.logger
  if (logger !== undefined && logger !== false && (typeof logger !== 'object' || logger === null)) {
    throw invalid('option "logger"', logger, 'a pino logger, pino options or false')
  }
  if (logger === undefined && env.LOG_LEVEL !== undefined && env.LOG_LEVEL !== '' &&
      !['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(env.LOG_LEVEL)) {
    throw invalid('env LOG_LEVEL', env.LOG_LEVEL, 'one of fatal, error, warn, info, debug, trace, silent')
  }

  // Read /proc only when nobody chose a count.
  const chosen = workersFrom === undefined ? defaultWorkerCount() : undefined
  const format = env.NCLUST_LOG_FORMAT
  if (format !== undefined && format !== '' && format !== 'pretty' && format !== 'json') {
    throw invalid('env NCLUST_LOG_FORMAT', format, 'pretty or json')
  }

  const control = controlPath(options, env, port)

  return {
    workers: chosen?.workers ?? workers,
    workersFrom: chosen?.reason ?? workersFrom ?? '',
    port,
    host,
    balance,
    shutdownTimeout,
    startTimeout,
    startRetries,
    heartbeatInterval,
    heartbeatTimeout,
    reportDirectory: reportDirectory ?? defaultReportDirectory(env),
    reportDirectoryIsDefault: reportDirectory === undefined,
    hangProbe: hangRaw === undefined || hangRaw === 'after-hang' ? 'on-hang' : hangRaw as 'always' | 'off' | 'on-hang',
    reportMaxFiles,
    reportMaxBytes,
    maxRequests,
    maxRequestsJitter,
    maxRss,
    restartBackoff,
    crashLoop,
    drain,
    logger: logger ?? (env.LOG_LEVEL ? { level: env.LOG_LEVEL } : undefined),
    logFormat: logFormat(env),
    handleSignals: options.handleSignals ?? true,
    control,
    controlIsDefault: options.control === undefined && (env.NCLUST_CONTROL === undefined || env.NCLUST_CONTROL === '')
  }
}

function controlPath (options: ClusterOptions, env: Record<string, string | undefined>, port: number): string | false {
  const fromOption = options.control !== undefined
  const raw: unknown = fromOption ? options.control : env.NCLUST_CONTROL
  const label = fromOption ? 'option "control"' : 'env NCLUST_CONTROL'
  if (raw === false || raw === 'false') return false
  if (raw === undefined || (!fromOption && raw === '')) return defaultControlPath(port, env)
  if (typeof raw !== 'string' || raw.trim() === '' || raw.includes('\0')) throw invalid(label, raw, 'a unix socket path or false')
  const path = resolveControlPath(raw.trim())
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) throw invalid(label, raw, `a path of at most ${MAX_SOCKET_PATH} bytes once absolute (a unix socket's limit)`)
  return path
}

/** The drain plugin's deadline: a little below the cluster's, so the SIGKILL is only a backstop. */
export function drainTimeoutFor (shutdownTimeout: number): number {
  return Math.max(1, shutdownTimeout - Math.min(5000, Math.ceil(shutdownTimeout * 0.1)))
}

function timingOf (drain: Record<string, unknown>, key: 'linger' | 'delay'): number {
  const v = drain[key]
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : DRAIN_DEFAULTS[key]
}
function lingerOf (drain: Record<string, unknown>): number { return timingOf(drain, 'linger') }

/**
 * The smallest `shutdownTimeout` the default drain fits in: its deadline, {@link drainTimeoutFor},
 * must exceed the drain's `linger` (250 ms by default) and `delay`, or the plugin rejects its options
 * and every worker fails at start. 1 when the drain is off or given its own `timeout`.
 */
export function minShutdownTimeout (drain: false | Record<string, unknown>): number {
  if (drain === false || drain.timeout !== undefined) return 1
  const need = Math.max(timingOf(drain, 'linger'), timingOf(drain, 'delay'))
  let st = need + 1
  while (drainTimeoutFor(st) <= need) st += 1
  return st
}

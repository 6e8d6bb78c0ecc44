import type { LoggerOptions, Logger } from 'pino'
import type { DrainOptions } from '@nclust/fastify-drain'
import { DRAIN_DEFAULTS, minDrainTimeout } from '@nclust/fastify-drain/defaults'
import type { BackoffPolicy, CrashLoopPolicy } from './primary/backoff.js'
import { errors, show } from './errors.js'
import { defaultWorkerCount } from './cgroup.js'
import { BALANCE_VALUES, kernelBalanceUnsupported, type Balance } from './balance.js'
import { logFormat, type LogFormat } from './logger.js'
import { defaultReportDirectory } from './probe.js'
import { isAbsolute } from 'node:path'
import { defaultControlPath, resolveControlPath } from './control-protocol.js'

/**
 * Options of `startClustered`. What each one does, its env var, its `nclust start` flag, its default
 * and what it allows are declared once, in {@link SETTINGS} below (the README's table and
 * `nclust --help` are made from it); an explicit option wins over its env var.
 */
export interface ClusterOptions {
  /** Worker processes; 1 runs the app in-process with no fork. */
  workers?: number
  /** Port every worker listens on (0: one random port shared by all workers). */
  port?: number
  /** Address to listen on. */
  host?: string
  /** Who spreads new connections over the workers: `'primary'`, `'kernel'` or `'sticky'` (see the README). */
  balance?: Balance
  /** balance 'sticky': ms a connection waits in the primary for its slot's worker while it (re)starts. */
  stickyWait?: number
  /** balance 'sticky': connections waiting per slot at most. */
  stickyQueue?: number
  /** balance 'sticky': every connection starts with a PROXY protocol header (v1 or v2). */
  proxyProtocol?: boolean
  /** Graceful shutdown deadline in ms; a worker still alive then is SIGKILLed. */
  shutdownTimeout?: number
  /** A worker not ready within this many ms is killed and counts as a failed start. */
  startTimeout?: number
  /** Retries a slot that has never been ready gets after a failed start, before the cluster exits 1. */
  startRetries?: number
  /** How often a ready worker sends a heartbeat from its event loop, ms. */
  heartbeatInterval?: number
  /** A ready worker silent this long (ms) is hung: its stack is captured (see `hangProbe`), it is SIGKILLed and replaced; 0 is off. */
  heartbeatTimeout?: number
  /** Folder for the watchdog's diagnostic reports of hung workers (absolute path, private). */
  reportDirectory?: string
  /** How a hung worker's stack is taken: `'on-hang'` (the inspector, started only at a hang), `'always'` (a probe thread) or `'off'`. */
  hangProbe?: HangProbe
  /** At most this many nclust report files in `reportDirectory`; the oldest are removed first. */
  reportMaxFiles?: number
  /** At most this many bytes of them (the newest file is always kept). */
  reportMaxBytes?: number
  /** Recycle a worker after this many requests (surge-first, like a reload); 0 is off. */
  maxRequests?: number
  /** Add 0..maxRequestsJitter (random, per worker) to `maxRequests` so workers do not all recycle together. */
  maxRequestsJitter?: number
  /** Recycle a worker whose resident memory passes this many MB (sampled with each heartbeat); 0 is off. */
  maxRss?: number
  /** Restart delays: exponential from `initialDelay` to `maxDelay`, reset after `resetAfter` ms of uptime. */
  restartBackoff?: Partial<BackoffPolicy>
  /** Stop respawning when one slot fails `maxFailures` times within `window` ms: the primary exits 1. */
  crashLoop?: Partial<CrashLoopPolicy>
  /**
   * Register `@nclust/fastify-drain` on the app each worker builds (skipped when the app already has it).
   * `true` uses a drain deadline a little below `shutdownTimeout`; options are passed to the plugin; `false` opts out.
   */
  drain?: boolean | DrainOptions
  /** A pino logger, pino options, or `false` for silence. */
  logger?: Logger | LoggerOptions | false
  /** Install SIGTERM/SIGINT/SIGHUP handlers and exit after a signal (primary and single mode). */
  handleSignals?: boolean
  /** The primary's control socket for `nclust status|reload|scale|stop|diagnose`: a unix socket path, or `false`. */
  control?: string | false
  /** Where env vars are read from (default `process.env`). */
  env?: Record<string, string | undefined>
}

export const HANG_PROBE_VALUES = ['on-hang', 'always', 'off', 'after-hang'] as const
export type HangProbe = typeof HANG_PROBE_VALUES[number]

export interface ResolvedOptions {
  workers: number
  /** How `workers` was chosen, for the start line: `WORKER_COUNT`, `--workers`, `option workers`, `cgroup quota 2.0 CPUs of 64 cores`. */
  workersFrom: string
  port: number
  host: string
  balance: Balance
  stickyWait: number
  stickyQueue: number
  proxyProtocol: boolean
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
  /** The drain plugin's options, its `timeout` filled in (derived from `shutdownTimeout` unless given), or false. */
  drain: false | DrainOptions & { timeout: number }
  logger: Logger | LoggerOptions | false | undefined
  /** How loggers built from options print: `pretty` on a terminal, `json` otherwise (env `NCLUST_LOG_FORMAT`). */
  logFormat: LogFormat
  handleSignals: boolean
  /** Absolute path of the control socket, or false. */
  control: string | false
  /** True when {@link control} is the default path (no option, flag or env): a folder that cannot be made there turns the socket off with a warning instead of failing the start. */
  controlIsDefault: boolean
}

/** The bound of a worker count, for `workers`, `WORKER_COUNT`, `--workers` and `nclust scale`. */
export const MAX_WORKERS = 1024
const MAX_MS = 2 ** 31 - 1 // setTimeout's ceiling
const MAX_SOCKET_PATH = 107 // sun_path holds 108 bytes with its NUL
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

/** Where a raw value came from; its label names it in an error (`option port`, `--port`, `env PORT`). */
export type Source = 'option' | 'flag' | 'env'
interface Ctx {
  from: Source
  /** Throw the one-line error: `<label> must be <allowed, default the setting's>, got <raw>`. */
  bad: (allowed?: string) => never
}

/**
 * One option, declared once (Gunicorn's `Setting` is the model). `parse` turns a raw value, the
 * option's own value (any type) or the text of its env var or flag, into the resolved value, or
 * calls `ctx.bad()`. `default` is used when nothing was given; a setting without one is derived
 * in {@link resolveOptions} (the worker count, the report folder, the control path, the logger).
 */
export interface Setting<T = unknown> {
  /** The `startClustered` option, or null for an env var only (`NCLUST_LOG_FORMAT`). */
  option: keyof ClusterOptions | null
  env: string | null
  /** The `nclust start` flag: long name without `--`, one-letter short form, its value's name and its line in `nclust --help`. */
  flag?: { name: string, short?: string, value: string, help: string }
  default?: T
  /** The default as documented, when `default` is derived or is better said in words. */
  defaultText?: string
  /** What is allowed, in the words of the error message (`... must be <allowed>, got ...`). */
  allowed: string
  /** More for the README table, after `allowed`. */
  doc?: string
  parse: (raw: unknown, ctx: Ctx) => T
}

function setting<T> (s: Setting<T>): Setting<T> { return s }

/** An integer from min to max: a number option, or the digits of an env var or flag (`-0`, `1e3`, `1.5` refused). */
function integer (min: number, max: number, allowed = `an integer from ${min} to ${max}`): Pick<Setting<number>, 'allowed' | 'parse'> {
  return {
    allowed,
    parse: (raw, ctx) => {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\+?\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN
      return !Number.isInteger(n) || Object.is(n, -0) || n < min || n > max ? ctx.bad() : n
    }
  }
}
const ms = (min: number, allowed?: string): Pick<Setting<number>, 'allowed' | 'parse'> => integer(min, MAX_MS, allowed ?? `an integer number of ms from ${min} to ${MAX_MS}`)

function oneOf<T extends string> (values: readonly T[]): Pick<Setting<T>, 'allowed' | 'parse'> {
  const allowed = values.map((v) => `"${v}"`).join(', ').replace(/, ([^,]*)$/, ' or $1')
  return { allowed, parse: (raw, ctx) => typeof raw === 'string' && (values as readonly string[]).includes(raw) ? raw as T : ctx.bad() }
}

/** An object of numbers merged over its defaults (`restartBackoff`, `crashLoop`); unknown keys are refused. */
function policy<T extends object> (name: string, defaults: T, allowed: string, check: (k: string, v: number) => boolean): Setting<T> {
  return {
    option: name as keyof ClusterOptions,
    env: null,
    default: defaults,
    allowed,
    parse: (raw, ctx) => {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return ctx.bad()
      const out: Record<string, number> = { ...(defaults as Record<string, number>) }
      for (const [k, v] of Object.entries(raw) as Array<[string, unknown]>) {
        if (!(k in defaults)) throw new errors.NCLUST_CLUSTER_UNKNOWN_OPTION(`${name}.${k}`, Object.keys(defaults).join(', '))
        if (v === undefined) continue
        if (typeof v !== 'number' || !Number.isFinite(v) || !check(k, v)) throw new errors.NCLUST_CLUSTER_INVALID_OPTION(`option ${name}.${k}`, allowed, show(v))
        out[k] = v
      }
      return out as T
    }
  }
}

/**
 * The one list of options. Resolution (option, else flag, else env var, else default), the
 * `nclust start` flags, `nclust --help` and the README's option and flag tables all come from it
 * (the README tables are checked against it by a test; `node scripts/options-table.mjs` prints them).
 * Adding an option: one entry here (option, env, flag, default, allowed, doc, parse: `integer()`,
 * `ms()`, `oneOf()` or your own calling `ctx.bad()`), its field in {@link ClusterOptions} and
 * {@link ResolvedOptions}, `name: get('name')` in resolveOptions' result (a rule between two options
 * goes beside the others there, through `refuse`), then `node scripts/readme-options.mjs` for the
 * README and, with an env var or flag, a sample in test/options.test.ts's TEXT.
 */
export const SETTINGS = {
  workers: setting({
    option: 'workers',
    env: 'WORKER_COUNT',
    flag: { name: 'workers', short: 'w', value: 'n', help: 'worker processes (1: in-process, no fork)' },
    defaultText: 'os.availableParallelism(), capped by a cgroup CPU quota',
    ...integer(1, MAX_WORKERS),
    doc: '1 runs in-process, no fork. The default honours a container\'s CPU limit on every Node (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`, along the process\'s cgroup path): `ceil(quota / period)`, at least 1, at most `os.availableParallelism()`; the primary\'s start line says how it chose (`workers: 2 (cgroup quota 2.0 CPUs of 64 cores)`)'
  }),
  port: setting({
    option: 'port',
    env: 'PORT',
    flag: { name: 'port', short: 'p', value: 'port', help: 'port every worker listens on' },
    default: 3000,
    ...integer(0, 65535),
    doc: '0: one random port shared by all workers'
  }),
  host: setting({
    option: 'host',
    env: 'HOST',
    flag: { name: 'address', short: 'a', value: 'address', help: 'address to listen on' },
    default: '0.0.0.0',
    allowed: 'a non-empty host name or address',
    parse: (raw, ctx) => typeof raw === 'string' && raw.trim() !== '' ? raw.trim() : ctx.bad()
  }),
  balance: setting<Balance>({
    option: 'balance',
    env: 'NCLUST_BALANCE',
    default: 'primary',
    ...oneOf(BALANCE_VALUES),
    doc: '`"primary"`: the primary owns the listening socket, accepts every connection and hands it unread to the next ready worker over IPC (round robin; the socket can come from systemd and is handed to a new primary on `nclust upgrade`); `"kernel"`: each worker listens with `reusePort: true` (SO_REUSEPORT) and the kernel spreads connections by hash. Kernel needs Linux, Node 22.12+/23.1+, a fixed port and an address (not `localhost`), and is refused elsewhere with one line; `"sticky"`: the primary hands every connection from one client address to the same worker (Socket.IO long-polling, in-memory sessions); see [Balancing](#balancing)'
  }),
  stickyWait: setting({
    option: 'stickyWait',
    env: 'NCLUST_STICKY_WAIT',
    default: 30000,
    ...ms(0),
    doc: 'balance sticky: how long a connection waits in the primary for its slot\'s worker while that worker starts or restarts (counted from when the slot went down); past it the slot\'s addresses fall back to the serving slots until it serves again. The default is the default `startTimeout`: a first start may take that long'
  }),
  stickyQueue: setting({
    option: 'stickyQueue',
    env: 'NCLUST_STICKY_QUEUE',
    default: 1000,
    ...integer(0, 1_000_000),
    doc: 'balance sticky: connections waiting per slot at most; more fall back at once'
  }),
  proxyProtocol: setting({
    option: 'proxyProtocol',
    env: 'NCLUST_PROXY_PROTOCOL',
    default: false,
    allowed: 'a boolean (env: 1, true, 0 or false)',
    parse: (raw, ctx) => raw === true || raw === '1' || raw === 'true' ? true : raw === false || raw === '0' || raw === 'false' ? false : ctx.bad(),
    doc: 'balance sticky: every connection starts with a PROXY protocol header (v1 or v2: nginx `proxy_protocol on`, HAProxy `send-proxy`, cloud network load balancers); the primary hashes the client it names and the worker\'s `request.ip` is that client. A connection without a valid header is closed. Refused unless balance is `"sticky"`'
  }),
  shutdownTimeout: setting({
    option: 'shutdownTimeout',
    env: 'SHUTDOWN_TIMEOUT',
    flag: { name: 'shutdown-timeout', value: 'ms', help: 'ms a worker gets to drain before SIGKILL' },
    default: 30000,
    ...ms(1),
    doc: 'at least 279 with the default drain (its deadline, this minus min(5 s, 10 %), must exceed its 250 ms `linger` and its `delay`: `minShutdownTimeout(drain)` computes it; a smaller value is rejected at start naming the minimum); a worker still alive then is SIGKILLed and the primary exits 1'
  }),
  startTimeout: setting({ option: 'startTimeout', env: null, default: 30000, ...ms(1), doc: 'a worker not ready by then is killed and counts as a failed start' }),
  startRetries: setting({
    option: 'startRetries',
    env: 'START_RETRIES',
    default: 2,
    ...integer(0, 100),
    doc: 'retries a slot that has never been ready gets after a failed start (3 tries in all); then the cluster stops and exits 1, printing the error and its stack once'
  }),
  heartbeatInterval: setting({ option: 'heartbeatInterval', env: null, default: 1000, ...ms(10), doc: 'ms between a worker\'s heartbeats, sent from its event loop' }),
  heartbeatTimeout: setting({
    option: 'heartbeatTimeout',
    env: 'HEARTBEAT_TIMEOUT',
    default: 30000,
    ...ms(0, `0 (off) or an integer number of ms above heartbeatInterval, up to ${MAX_MS}`),
    doc: 'a ready worker silent this long is hung: a diagnostic report of its stack (see `hangProbe`), SIGKILL, replaced (reason `hung`)'
  }),
  reportDirectory: setting({
    option: 'reportDirectory',
    env: 'NCLUST_REPORT_DIR',
    defaultText: '$XDG_STATE_HOME/nclust/reports, else ~/.local/state/nclust/reports (private, 0700)',
    allowed: 'an absolute path',
    parse: (raw, ctx) => typeof raw === 'string' && isAbsolute(raw) ? raw : ctx.bad(),
    doc: 'where hang reports go (Node\'s `--report-directory` is used when given and this is not). Created 0700 if missing; a folder owned by another user or writable by group/others is refused at report time (the frames are still logged). Reports are 0600 files without environment values'
  }),
  hangProbe: setting<Exclude<HangProbe, 'after-hang'>>({
    option: 'hangProbe',
    env: 'NCLUST_HANG_PROBE',
    default: 'on-hang',
    allowed: '"on-hang", "always", "off" or "after-hang" (read as "on-hang")',
    parse: (raw, ctx) => raw === 'after-hang' ? 'on-hang' : typeof raw === 'string' && (HANG_PROBE_VALUES as readonly string[]).includes(raw) ? raw as Exclude<HangProbe, 'after-hang'> : ctx.bad(),
    doc: 'how a hung worker\'s stack is taken. `"on-hang"`: nothing runs until a worker hangs; then the primary starts that worker\'s inspector (SIGUSR1; workers are forked with `--inspect-port=127.0.0.1:0`, which opens nothing), pauses it over loopback, reads the frames and a diagnostic report, and SIGKILLs it (the port is open for that capture only, at most 5 s; Linux). `"always"`: a hang-probe thread in every worker answers over a private unix socket (no TCP port; ~10 MB RSS per worker). `"off"`: no stack. The watchdog kills and replaces hung workers in every mode; see [Hang watchdog](#hang-watchdog-how-the-stack-of-a-blocked-loop-is-taken)'
  }),
  reportMaxFiles: setting({ option: 'reportMaxFiles', env: 'NCLUST_REPORT_MAX_FILES', default: 20, ...integer(1, 100000), doc: 'nclust report files (hang reports, `nclust diagnose` output) kept in `reportDirectory`; the oldest are removed first' }),
  reportMaxBytes: setting({ option: 'reportMaxBytes', env: 'NCLUST_REPORT_MAX_BYTES', default: 512 * 1024 * 1024, ...integer(1, Number.MAX_SAFE_INTEGER, 'an integer number of bytes from 1 to 2^53-1'), doc: 'bytes of those files at most (oldest removed first; the newest is always kept)' }),
  maxRequests: setting({ option: 'maxRequests', env: 'MAX_REQUESTS', default: 0, ...integer(0, Number.MAX_SAFE_INTEGER, '0 (off) or a positive integer'), doc: 'recycle a worker after this many requests (surge-first, like a reload)' }),
  maxRequestsJitter: setting({ option: 'maxRequestsJitter', env: null, default: 0, ...integer(0, Number.MAX_SAFE_INTEGER, 'a non-negative integer'), doc: 'add a random 0..jitter to `maxRequests` per worker, so workers do not all recycle together' }),
  maxRss: setting({ option: 'maxRss', env: 'MAX_RSS', default: 0, ...integer(0, 1024 * 1024, 'MB: 0 (off) or a positive integer'), doc: 'recycle a worker whose RSS passes it (sampled with each heartbeat)' }),
  restartBackoff: setting({
    ...policy<BackoffPolicy>('restartBackoff', { initialDelay: 100, maxDelay: 15000, factor: 2, resetAfter: 60000 },
      'a non-negative integer of ms (factor: a number >= 1)', (k, v) => k === 'factor' ? v >= 1 : Number.isInteger(v) && v >= 0 && v <= MAX_MS),
    doc: 'restart delay `initialDelay * factor^n` capped at `maxDelay`; reset after a worker stays ready `resetAfter` ms'
  }),
  crashLoop: setting({
    ...policy<CrashLoopPolicy>('crashLoop', { maxFailures: 10, window: 60000 }, 'a positive integer', (_k, v) => Number.isInteger(v) && v >= 1 && v <= MAX_MS),
    doc: 'one slot failing `maxFailures` times within `window` ms stops the cluster with exit 1'
  }),
  drain: setting<false | DrainOptions>({
    option: 'drain',
    env: null,
    default: {},
    defaultText: 'true',
    allowed: 'true, false or an object of @nclust/fastify-drain options',
    parse: (raw, ctx) => raw === true ? {} : raw === false ? false : typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? { ...raw } : ctx.bad(),
    doc: 'its `timeout` defaults to `shutdownTimeout` minus min(5 s, 10 %), and a `timeout` given must be below `shutdownTimeout`'
  }),
  logger: setting<Logger | LoggerOptions | false>({
    option: 'logger',
    env: 'LOG_LEVEL',
    flag: { name: 'log-level', short: 'l', value: 'level', help: LOG_LEVELS.join(', ') },
    defaultText: 'pino at level info; pretty on a terminal, JSON otherwise',
    allowed: 'a pino logger, pino options or false',
    parse: (raw, ctx) => {
      if (ctx.from !== 'option') return typeof raw === 'string' && LOG_LEVELS.includes(raw) ? { level: raw } : ctx.bad(`one of ${LOG_LEVELS.join(', ')}`)
      return raw === false || (typeof raw === 'object' && raw !== null) ? raw as Logger | LoggerOptions | false : ctx.bad()
    },
    doc: `the env var and the flag give a level: ${LOG_LEVELS.join(', ')} (see [Logs](#logs))`
  }),
  logFormat: setting<LogFormat>({
    option: null,
    env: 'NCLUST_LOG_FORMAT',
    defaultText: 'pretty on a terminal, JSON otherwise',
    ...oneOf(['pretty', 'json'] as const),
    doc: 'how the loggers built from options print'
  }),
  handleSignals: setting({
    option: 'handleSignals',
    env: null,
    default: true,
    allowed: 'a boolean',
    parse: (raw, ctx) => typeof raw === 'boolean' ? raw : ctx.bad(),
    doc: 'in the primary and in single mode: install the SIGTERM/SIGINT handlers, SIGHUP (reload, primary) and the `uncaughtException`/`unhandledRejection` handlers, and exit the process after a signal, a crash loop or a fatal error. `false` turns all of these off: call `close()` / `reload()` yourself. Forked workers always handle their signals'
  }),
  control: setting<string | false>({
    option: 'control',
    env: 'NCLUST_CONTROL',
    flag: { name: 'control', value: 'path', help: 'control socket path, or false' },
    defaultText: '$XDG_RUNTIME_DIR/nclust/<hash>.sock, else ~/.nclust/run/<hash>.sock',
    allowed: `a unix socket path (at most ${MAX_SOCKET_PATH} bytes once absolute) in a folder only its user may write, or false`,
    parse: (raw, ctx) => {
      if (raw === false || raw === 'false') return false
      if (typeof raw !== 'string' || raw.trim() === '' || raw.includes('\0')) return ctx.bad()
      const path = resolveControlPath(raw.trim())
      return Buffer.byteLength(path) > MAX_SOCKET_PATH ? ctx.bad() : path
    },
    doc: 'the primary\'s control socket for `nclust status`, `reload`, `scale`, `stop`, `diagnose` (see [Operating a running cluster](#operating-a-running-cluster)); `false` (`NCLUST_CONTROL=false`, `--control false`) for none. The default folder is created 0700; `<hash>` covers the working directory, the command line and the port'
  }),
  env: setting<Record<string, string | undefined>>({
    option: 'env',
    env: null,
    defaultText: 'process.env',
    allowed: 'an object of strings',
    parse: (raw, ctx) => typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? raw as Record<string, string | undefined> : ctx.bad()
  })
}

export type SettingName = keyof typeof SETTINGS

/** A setting's default as documented (README table, `nclust --help`). */
export function defaultText (s: Setting<unknown>): string {
  if (s.defaultText !== undefined) return s.defaultText
  const d = s.default
  if (typeof d === 'object' && d !== null) return `{ ${Object.entries(d).map(([k, v]) => `${k}: ${String(v)}`).join(', ')} }`
  return String(d)
}
type Value<K extends SettingName> = ReturnType<typeof SETTINGS[K]['parse']>

/** The label an error names: `option port`, `--port`, `env PORT`. */
export function labelOf (s: Setting<unknown>, from: Source): string {
  return from === 'option' ? `option ${String(s.option)}` : from === 'flag' ? `--${s.flag?.name ?? ''}` : `env ${s.env ?? ''}`
}

/**
 * Where one setting's value comes from: the option if given (not undefined), else the flag, else the
 * env var. An empty env var or flag counts as unset (`HOST=` in a compose file or a shell export),
 * the same for every one; an empty string given as an option is a value, and is judged.
 */
function pick (s: Setting<unknown>, options: ClusterOptions, flags: FlagValues, env: Record<string, string | undefined>): { raw: unknown, from: Source } | undefined {
  if (s.option !== null && options[s.option] !== undefined) return { raw: options[s.option], from: 'option' }
  const key = s.option ?? ''
  if (flags[key] !== undefined && flags[key] !== '') return { raw: flags[key], from: 'flag' }
  if (s.env !== null && env[s.env] !== undefined && env[s.env] !== '') return { raw: env[s.env], from: 'env' }
  return undefined
}

function invalid (label: string, allowed: string, raw: unknown): Error {
  return new errors.NCLUST_CLUSTER_INVALID_OPTION(label, allowed, show(raw))
}

/** Flag values by option name, as the CLI parsed them (strings). */
export type FlagValues = Partial<Record<string, string>>

/**
 * Resolve and validate every option, flag and env var, once per process, before anything is forked.
 * Throws `NCLUST_CLUSTER_INVALID_OPTION` / `NCLUST_CLUSTER_UNKNOWN_OPTION` with one line:
 * `<option, --flag or env VAR> must be <allowed>, got <value>`. `flags` is for the `nclust` CLI.
 */
export function resolveOptions (options: ClusterOptions = {}, flags: FlagValues = {}): ResolvedOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw invalid('options', 'an object', options)
  const known = Object.values(SETTINGS).map((s) => s.option).filter((o) => o !== null)
  for (const key of Object.keys(options)) {
    if (!(known as string[]).includes(key)) throw new errors.NCLUST_CLUSTER_UNKNOWN_OPTION(key, known.join(', '))
  }
  const env = options.env === undefined ? process.env : SETTINGS.env.parse(options.env, { from: 'option', bad: (a) => { throw invalid('option env', a ?? SETTINGS.env.allowed, options.env) } })
  const from: Partial<Record<SettingName, string>> = {}
  const get = <K extends SettingName>(name: K): Value<K> | undefined => {
    const s = SETTINGS[name] as Setting<unknown>
    const got = pick(s, options, flags, env)
    if (got === undefined) return s.default as Value<K> | undefined
    from[name] = labelOf(s, got.from)
    return s.parse(got.raw, { from: got.from, bad: (allowed) => { throw invalid(labelOf(s, got.from), allowed ?? s.allowed, got.raw) } }) as Value<K>
  }
  /** A value refused by a rule between two settings, named as it was given. */
  const refuse = (name: SettingName, allowed: string, value: unknown): never => { throw invalid(from[name] ?? `option ${name}`, allowed, value) }
  const must = <T>(v: T | undefined): T => v as T // settings with a static default

  const workers = get('workers')
  const port = must(get('port'))
  const shutdownTimeout = must(get('shutdownTimeout'))
  const heartbeatInterval = must(get('heartbeatInterval'))
  const heartbeatTimeout = must(get('heartbeatTimeout'))
  if (heartbeatTimeout !== 0 && heartbeatTimeout <= heartbeatInterval) refuse('heartbeatTimeout', `0 (off) or a value above heartbeatInterval (${heartbeatInterval})`, heartbeatTimeout)
  const host = must(get('host'))
  const balance = must(get('balance'))
  if (balance === 'kernel') {
    const why = kernelBalanceUnsupported()
    if (why !== undefined) refuse('balance', `"primary" here: ${why}`, balance)
    if (host === 'localhost') refuse('balance', '"primary" with host localhost (Fastify binds it twice, 127.0.0.1 and ::1): give an address', balance)
    if (port === 0) refuse('balance', '"primary" with port 0: with kernel balancing each worker would get its own random port; give a fixed port', balance)
  }
  const proxyProtocol = must(get('proxyProtocol'))
  if (proxyProtocol && balance !== 'sticky') refuse('proxyProtocol', 'false unless balance is "sticky" (the PROXY protocol is read by the sticky listener)', proxyProtocol)
  const restartBackoff = must(get('restartBackoff'))
  if (restartBackoff.maxDelay < restartBackoff.initialDelay) {
    throw invalid('option restartBackoff.maxDelay', `a value >= restartBackoff.initialDelay (${restartBackoff.initialDelay})`, restartBackoff.maxDelay)
  }
  const drain = resolveDrain(must(get('drain')), shutdownTimeout, (allowed, value) => refuse('shutdownTimeout', allowed, value), from.shutdownTimeout !== undefined ? `from ${from.shutdownTimeout}` : 'the default')

  // Node's own --report-directory, when the operator gave one, comes before the private default.
  const nodeReportDir = process.report?.directory
  const reportDirectory = get('reportDirectory') ?? (nodeReportDir !== undefined && nodeReportDir !== '' ? nodeReportDir : undefined)
  const logger = get('logger')
  const format = get('logFormat')
  const control = get('control')
  // Read /proc only when nobody chose a count.
  const chosen = workers === undefined ? defaultWorkerCount() : undefined
  return {
    workers: chosen?.workers ?? workers ?? 1,
    workersFrom: chosen?.reason ?? (from.workers === 'env WORKER_COUNT' ? 'WORKER_COUNT' : from.workers ?? ''),
    port,
    host,
    balance,
    stickyWait: must(get('stickyWait')),
    stickyQueue: must(get('stickyQueue')),
    proxyProtocol,
    shutdownTimeout,
    startTimeout: must(get('startTimeout')),
    startRetries: must(get('startRetries')),
    heartbeatInterval,
    heartbeatTimeout,
    reportDirectory: reportDirectory ?? defaultReportDirectory(env),
    reportDirectoryIsDefault: reportDirectory === undefined,
    hangProbe: must(get('hangProbe')),
    reportMaxFiles: must(get('reportMaxFiles')),
    reportMaxBytes: must(get('reportMaxBytes')),
    maxRequests: must(get('maxRequests')),
    maxRequestsJitter: must(get('maxRequestsJitter')),
    maxRss: must(get('maxRss')),
    restartBackoff,
    crashLoop: must(get('crashLoop')),
    drain,
    logger,
    logFormat: format ?? logFormat({}),
    handleSignals: must(get('handleSignals')),
    control: control ?? defaultControlPath(port, env),
    controlIsDefault: control === undefined
  }
}

/**
 * The drain the workers register: its `timeout` a little below `shutdownTimeout` unless given, and
 * the drain's own timing rule ({@link minDrainTimeout}: delay and linger end before the deadline)
 * checked here, in the primary, so a misfit fails the start once instead of every worker.
 * A given `drain.timeout` at or above `shutdownTimeout` is refused, naming both: the SIGKILL at
 * `shutdownTimeout` would cut every drain that needs it, silently (see the report of issue 26).
 */
function resolveDrain (drain: false | DrainOptions, shutdownTimeout: number, refuseShutdown: (allowed: string, value: number) => never, shutdownFrom: string): false | DrainOptions & { timeout: number } {
  if (drain === false) return false
  if (drain.timeout === undefined) {
    const min = minShutdownTimeout(drain)
    if (shutdownTimeout < min) {
      refuseShutdown(`at least ${min} ms: the drain's deadline (shutdownTimeout minus min(5 s, 10 %)) must exceed its linger ` +
        `(${drain.linger ?? DRAIN_DEFAULTS.linger} ms) and delay, or every worker fails at start`, shutdownTimeout)
    }
    return { ...drain, timeout: drainTimeoutFor(shutdownTimeout) }
  }
  if (typeof drain.timeout !== 'number' || !Number.isInteger(drain.timeout) || drain.timeout < 1) {
    throw invalid('option drain.timeout', `an integer number of ms from 1, below shutdownTimeout (${shutdownTimeout})`, drain.timeout)
  }
  if (drain.timeout >= shutdownTimeout) {
    throw invalid('option drain.timeout', `below shutdownTimeout (${shutdownTimeout}, ${shutdownFrom}), the deadline at which workers are SIGKILLed`, drain.timeout)
  }
  return { ...drain, timeout: drain.timeout }
}

/** The drain plugin's deadline: a little below the cluster's, so the SIGKILL is only a backstop. */
export function drainTimeoutFor (shutdownTimeout: number): number {
  return Math.max(1, shutdownTimeout - Math.min(5000, Math.ceil(shutdownTimeout * 0.1)))
}

/**
 * The smallest `shutdownTimeout` the default drain fits in: its deadline, {@link drainTimeoutFor},
 * must reach the drain's own {@link minDrainTimeout} (above its `linger`, 250 ms by default, and
 * `delay`), or the plugin rejects its options and every worker fails at start. 1 when the drain is
 * off or given its own `timeout`.
 */
export function minShutdownTimeout (drain: false | DrainOptions): number {
  if (drain === false || drain.timeout !== undefined) return 1
  const need = minDrainTimeout({ delay: intOrUndefined(drain.delay), linger: intOrUndefined(drain.linger) })
  let st = need
  while (drainTimeoutFor(st) < need) st += 1
  return st
}
function intOrUndefined (v: unknown): number | undefined { return typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : undefined }

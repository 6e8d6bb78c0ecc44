import type { EventEmitter } from 'node:events'
import type { Server as NetServer } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { EXIT_REASONS, SHUTDOWN_REASONS } from './reasons.js'

/** What `buildApp` receives in each worker (and in single-process mode). */
export interface WorkerContext {
  /** Stable slot 0..workers-1: a replacement reuses the slot of the worker it replaces. */
  workerId: number
  /** How many workers the primary runs (1 in single-process mode). */
  workers: number
  /** Increments each time the slot is (re)forked: 0 for the first worker of a slot. */
  generation: number
  /** True when running in-process with no fork (`workers: 1`). */
  single: boolean
  /** Pino logger with `role`, `workerId` and `pid` bindings; pass it as Fastify's `loggerInstance`. */
  logger: Logger
}

/** Builds the Fastify app in a worker. Do not call `listen()`: the worker does it and then reports ready. */
export type BuildApp = (ctx: WorkerContext) => FastifyInstance | Promise<FastifyInstance>

export type WorkerState = 'starting' | 'ready' | 'draining' | 'stopped'

/**
 * Why a worker left (derived from `EXIT_REASONS`). `requested` exits (shutdown, reload, scale down) are
 * never replaced; `recycle` (maxRequests / maxRss) was replaced before it left, surge-first; `hung`
 * (silent past heartbeatTimeout, SIGKILLed) and the others are replaced after their backoff.
 */
export type ExitReason = typeof EXIT_REASONS[number]
/** Why the cluster shut down. Derived from `SHUTDOWN_REASONS`. */
export type ShutdownReason = typeof SHUTDOWN_REASONS[number]

export interface WorkerInfo {
  workerId: number
  pid: number
  state: WorkerState
  generation: number
  /** ms since epoch when this process was forked. */
  startedAt: number
  /** How many times this slot has been replaced after an unexpected exit. */
  restarts: number
}

export interface WorkerReadyEvent { workerId: number, pid: number, generation: number, startMs: number }
export interface WorkerExitEvent {
  workerId: number
  pid: number
  generation: number
  code: number | null
  signal: NodeJS.Signals | null
  reason: ExitReason
  /** Error message reported by the worker before it died, if any. */
  error?: string
}
export interface RestartEvent { workerId: number, attempt: number, delay: number, reason: ExitReason }
export interface ShutdownEvent { reason: ShutdownReason, signal?: NodeJS.Signals }
/** A slot that was never ready failed `startRetries + 1` starts in a row: the cluster stops, exit 1. */
export interface StartFailedEvent { workerId: number, tries: number, reason: ExitReason, error?: string, stack?: string }
/** A ready worker went silent past heartbeatTimeout; `report` is the diagnostic report with its JS stack, when one could be taken. */
export interface HungEvent { workerId: number, pid: number, silentMs: number, report?: string, frames: string[] }
/** A worker passed maxRequests or maxRss and is being replaced surge-first. */
export interface RecycleEvent { workerId: number, pid: number, why: 'maxRequests' | 'maxRss', value: number, limit: number }
/** Outcome of `scale(n)`. */
export interface ScaleResult {
  ok: boolean
  from: number
  to: number
  /** Slots after the operation (== `to` when ok). */
  size: number
  ms: number
  reason?: string
}
export type ScaleEvent = { phase: 'start', from: number, to: number } | ({ phase: 'done' } & ScaleResult)
export interface StateEvent { workerId: number, pid: number, generation: number, from: WorkerState | null, to: WorkerState }
export interface CrashLoopEvent { workerId: number, failures: number, windowMs: number, lastCode: number | null, lastSignal: NodeJS.Signals | null }
export interface ClosedEvent { code: number, killed: Array<{ workerId: number, pid: number }> }
/** Outcome of a rolling reload. On failure the slots not yet replaced keep their old workers. */
export interface ReloadResult {
  ok: boolean
  /** Slots whose worker was replaced by a new generation. */
  replaced: number
  ms: number
  /** The slot whose new worker failed to start, and why. */
  failedWorkerId?: number
  reason?: string
  /** Where each slot ended: the generation (and pid) of its serving worker, null where none serves. */
  slots: Array<{ workerId: number, generation: number | null, pid: number | null }>
}
export type ReloadEvent = { phase: 'start' } | ({ phase: 'done' } & ReloadResult)

export interface SupervisorEvents {
  'worker-ready': [WorkerReadyEvent]
  'worker-exit': [WorkerExitEvent]
  restart: [RestartEvent]
  shutdown: [ShutdownEvent]
  state: [StateEvent]
  'crash-loop': [CrashLoopEvent]
  'start-failed': [StartFailedEvent]
  hung: [HungEvent]
  recycle: [RecycleEvent]
  scale: [ScaleEvent]
  closed: [ClosedEvent]
  reload: [ReloadEvent]
}

export interface RequestOptions {
  /** Per-worker timeout in ms (default 1000). */
  timeout?: number
}

export type RequestResult<T> =
  | { workerId: number, pid: number, ok: true, value: T, ms: number }
  | { workerId: number, pid: number, ok: false, error: string, ms: number }

/** Returned by `startClustered` in the primary. */
export interface PrimaryHandle {
  role: 'primary'
  /** The primary's own pino logger (`role: "primary"`), for the entry script's lines. */
  readonly logger: Logger
  /** Desired worker count (follows `scale()`). */
  readonly size: number
  /** Supervisor events; every slot transition is also a `state` event. */
  readonly events: EventEmitter<SupervisorEvents>
  /** Snapshot of the live workers (one entry per running process, including draining ones). */
  workers (): WorkerInfo[]
  /** Ask one worker over IPC; rejects on timeout, missing handler or dead worker. */
  request<T = unknown>(workerId: number, channel: string, payload?: unknown, options?: RequestOptions): Promise<T>
  /** Ask every ready worker at once; never rejects: each worker's result or error is reported on its own. */
  requestAll<T = unknown>(channel: string, payload?: unknown, options?: RequestOptions): Promise<Array<RequestResult<T>>>
  /** Run `fn` during shutdown after the workers are gone (e.g. close a metrics server). */
  onClose (fn: () => void | Promise<void>): void
  /**
   * Rolling reload (also on SIGHUP): for each slot in turn, fork its next generation, wait until it
   * is ready, then drain and stop the old worker; stop at the first new worker that fails to start
   * and keep the old ones serving. Asked while one runs (here, SIGHUP, --watch or `nclust reload`):
   * exactly one more full pass runs after it (further asks join that pass), and the promise resolves
   * with the pass that covers this ask, so every slot ends on code at least as new as the ask.
   * Refused (ok: false) once the shutdown began.
   */
  reload (): Promise<ReloadResult>
  /**
   * Run `n` workers (at least 1; also SIGTTIN / SIGTTOU: +1 / -1). Up: fork the new slots and wait
   * until they are ready. Down: drain and stop the highest slots. Runs after any reload or recycle
   * in progress; resolves when done.
   */
  scale (n: number): Promise<ScaleResult>
  /** Graceful shutdown of every worker; resolves with the exit code the primary would use. Does not exit the process. */
  close (): Promise<number>
  /** Resolves once every slot has been ready at least once (rejects if the supervisor shuts down first). */
  ready (): Promise<void>
  /**
   * Replace this primary by a new one (also SIGUSR2, `nclust upgrade`): same argv, `node` from PATH or
   * `opts.node`, the listening sockets handed over; resolves once the new one is ready (this one then
   * drains and exits) or with its error (this one serves on). Absent where the primary cannot upgrade.
   */
  upgrade?: (opts?: { node?: string }) => Promise<{ ok: boolean, pid?: number, error?: string, ms: number }>
  /**
   * Take part in upgrades with a listening server of the primary's own (e.g. the cluster scrape of
   * `@nclust/fastify-pidmetrics`): on `upgrade()` its descriptor is passed to the new primary under the
   * LISTEN_FDNAMES name `name` (letters, digits, `.`, `_`, `-`; not `http`, `nclust` or
   * `nclust-control`; `nclust-` names are never served as HTTP); once the new primary is ready this one
   * stops accepting on it: `handedOver()` when given (e.g. stop accepting but answer the next request
   * on each kept-alive connection with `connection: close`, so a scraper moves over without a reset),
   * else `server.close()`. Registering a name again replaces the server. Absent where the primary
   * cannot upgrade.
   */
  shareListener?: SharedListenerRegistrar
  /**
   * The listening descriptor passed to this primary under `name`, by an upgrading primary's
   * {@link PrimaryHandle.shareListener} or by systemd (`FileDescriptorName=`); undefined when none.
   * Given once (a second call returns undefined). From an upgrade, listen on it only once
   * {@link PrimaryHandle.ready} resolved: until then the old primary serves it, and a new primary that
   * fails to start is killed with whatever it accepted.
   */
  inheritedListener?: (name: string) => InheritedListener | undefined
}

/** Registers a listening server to hand to the next primary; returns a function that unregisters it. */
export type SharedListenerRegistrar = (name: string, server: NetServer, handedOver?: () => void) => () => void

/** A listening descriptor this primary was given. */
export interface InheritedListener {
  fd: number
  /** True when an upgrading primary passed it (it serves it until this one is ready); false for systemd. */
  fromUpgrade: boolean
}

/** Returned in a forked worker. */
export interface WorkerHandle {
  role: 'worker'
  app: FastifyInstance
  context: WorkerContext
  close (): Promise<void>
}

/** Returned in single-process mode (`workers: 1`): the app runs in this process. */
export interface SingleHandle {
  role: 'single'
  app: FastifyInstance
  context: WorkerContext
  close (): Promise<void>
}

export type ClusterHandle = PrimaryHandle | WorkerHandle | SingleHandle

/** Handler for a request sent by the primary to this worker over IPC. */
export type RequestHandler = (payload: unknown) => unknown | Promise<unknown>

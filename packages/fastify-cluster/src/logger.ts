import { createRequire } from 'node:module'
import type { DestinationStream, Logger, LoggerOptions } from 'pino'
import { lineLogger } from './primary/line-logger.js'

const require = createRequire(import.meta.url)
/** pino, loaded on first use: the primary's default logger does without it (see line-logger.ts). */
function pino (options: LoggerOptions, stream?: DestinationStream): Logger {
  const create = (require('pino') as { pino: (o: LoggerOptions, s?: DestinationStream) => Logger }).pino
  return stream === undefined ? create(options) : create(options, stream)
}

export type LogFormat = 'pretty' | 'json'

/**
 * Human-readable lines on a terminal (as fastify-cli does), JSON otherwise; `NCLUST_LOG_FORMAT`
 * (`pretty` | `json`) forces either. Workers inherit the primary's stdout, so they decide alike.
 */
export function logFormat (env: Record<string, string | undefined> = process.env): LogFormat {
  const forced = env.NCLUST_LOG_FORMAT
  if (forced === 'pretty' || forced === 'json') return forced
  return process.stdout.isTTY === true ? 'pretty' : 'json'
}

/**
 * The root pino logger of a role, with `role` and `pid` on every line; callers add `workerId`
 * with `.child({ workerId })` (the supervisor: `null` for its own lines, the slot id for a slot's).
 * A logger passed in by the user becomes the parent; pino options build a new one.
 */
export function createLogger (option: Logger | LoggerOptions | false | undefined, role: 'primary' | 'worker' | 'single', format: LogFormat = logFormat()): Logger {
  const base = { role, pid: process.pid }
  if (option === false) return pino({ level: 'silent' })
  if (option !== undefined && isLogger(option)) return option.child(base)
  if (role === 'primary' && format === 'json' && Object.keys(option ?? {}).every((k) => k === 'level')) {
    return lineLogger(option?.level ?? 'info', base)
  }
  return format === 'pretty' ? pino({ ...option, base }, prettyStream()) : pino({ ...option, base })
}

/**
 * pino-pretty as a synchronous stream in this process (not a transport: a transport is a worker
 * thread in every process, memory the lean primary does not want). Loaded only when pretty is
 * chosen, for the same reason. Each line starts with who wrote it: `primary`, `worker 1`, `single`.
 */
function prettyStream (): DestinationStream {
  const pretty = require('pino-pretty') as (opts: Record<string, unknown>) => DestinationStream
  return pretty({
    sync: true,
    singleLine: true,
    translateTime: 'HH:MM:ss.l',
    ignore: 'pid,hostname,role,workerId',
    messageFormat: (log: Record<string, unknown>, messageKey: string) => {
      const who = log.role === 'primary'
        ? (typeof log.workerId === 'number' ? `primary › worker ${log.workerId}` : 'primary')
        : log.role === 'worker' ? `worker ${String(log.workerId)}` : String(log.role ?? '')
      return `${who} (${String(log.pid)}) │ ${String(log[messageKey] ?? '')}`
    }
  })
}

function isLogger (value: Logger | LoggerOptions): value is Logger {
  return typeof (value as Logger).child === 'function' && typeof (value as Logger).info === 'function'
}

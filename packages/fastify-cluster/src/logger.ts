import { pino, type Logger, type LoggerOptions } from 'pino'

/**
 * The root pino logger of a role, with `role` and `pid` on every line; callers add `workerId`
 * with `.child({ workerId })` (the supervisor: `null` for its own lines, the slot id for a slot's).
 * A logger passed in by the user becomes the parent; pino options build a new one.
 */
export function createLogger (option: Logger | LoggerOptions | false | undefined, role: 'primary' | 'worker' | 'single'): Logger {
  const base = { role, pid: process.pid }
  if (option === false) return pino({ level: 'silent' })
  if (option !== undefined && isLogger(option)) return option.child(base)
  return pino({ ...option, base })
}

function isLogger (value: Logger | LoggerOptions): value is Logger {
  return typeof (value as Logger).child === 'function' && typeof (value as Logger).info === 'function'
}

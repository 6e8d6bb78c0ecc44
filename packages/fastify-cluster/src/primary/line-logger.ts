import type { Logger } from 'pino'

/**
 * The primary's default logger: pino's JSON line format (level numbers, `time`, bindings, `err`
 * serialized as `{ type, message, stack, ...}`, `msg` last), written synchronously to stdout.
 *
 * Hand-written on purpose, and only for the primary: loading pino's module graph (sonic-boom,
 * thread-stream and worker_threads for transports, redaction, serializers) measured +7 MB RSS in a
 * node:cluster primary of 46 MB, more than the whole lean-primary budget, for a process that writes a
 * few lines per worker lifetime. Workers, single mode, a `logger` with pino options beyond `level`,
 * a pino instance, and pretty output (a terminal) all use real pino.
 */
const LEVELS = { fatal: 60, error: 50, warn: 40, info: 30, debug: 20, trace: 10 } as const
type LevelName = keyof typeof LEVELS

export function lineLogger (level: string, bindings: Record<string, unknown>, write: (line: string) => void = (l) => { process.stdout.write(l) }): Logger {
  const threshold = level === 'silent' ? Infinity : LEVELS[level as LevelName] ?? LEVELS.info
  const prefix = JSON.stringify(bindings).slice(1, -1)

  function log (value: number, a: unknown, b: unknown): void {
    if (value < threshold) return
    let fields: Record<string, unknown> | undefined
    let msg: unknown
    if (a instanceof Error) { fields = { err: a }; msg = b ?? a.message } else if (typeof a === 'object' && a !== null) { fields = a as Record<string, unknown>; msg = b } else msg = a
    let body = ''
    if (fields !== undefined) {
      try { body = JSON.stringify(fields, replacer).slice(1, -1) } catch { body = '"fields":"[unserializable]"' }
    }
    const parts = [`"level":${value}`, `"time":${Date.now()}`, prefix, body, msg !== undefined ? `"msg":${JSON.stringify(String(msg))}` : '']
    write(`{${parts.filter((p) => p !== '').join(',')}}\n`)
  }

  const logger = {
    level,
    fatal: (a: unknown, b?: unknown) => log(LEVELS.fatal, a, b),
    error: (a: unknown, b?: unknown) => log(LEVELS.error, a, b),
    warn: (a: unknown, b?: unknown) => log(LEVELS.warn, a, b),
    info: (a: unknown, b?: unknown) => log(LEVELS.info, a, b),
    debug: (a: unknown, b?: unknown) => log(LEVELS.debug, a, b),
    trace: (a: unknown, b?: unknown) => log(LEVELS.trace, a, b),
    silent: () => {},
    isLevelEnabled: (name: string) => (LEVELS[name as LevelName] ?? Infinity) >= threshold,
    child: (more: Record<string, unknown>) => lineLogger(level, { ...bindings, ...more }, write),
    bindings: () => ({ ...bindings }),
    flush: () => {}
  }
  return logger as unknown as Logger
}

/** Errors as pino's std serializer writes them: type, message, stack and their own fields. */
function replacer (_key: string, value: unknown): unknown {
  if (!(value instanceof Error)) return value
  const out: Record<string, unknown> = { type: value.name, message: value.message, stack: value.stack }
  for (const [k, v] of Object.entries(value)) out[k] = v
  if (value.cause !== undefined) out.cause = value.cause
  return out
}

import { isPgUnavailable } from './db.js'

export type Dependency = 'postgres' | 'redis'

/** A request needed Postgres or Redis and could not reach it: the client gets 503, the worker keeps running. */
export class DependencyUnavailableError extends Error {
  readonly statusCode = 503
  readonly code = 'DEPENDENCY_UNAVAILABLE'
  readonly dependency: Dependency
  constructor (dependency: Dependency, cause: unknown) {
    super(`${dependency} is unavailable, retry later`, { cause })
    this.name = 'DependencyUnavailableError'
    this.dependency = dependency
  }
}

/**
 * Run one Redis operation; any failure to reach Redis becomes a 503. Redis command errors
 * (`ReplyError`, a bug in our commands) stay 500s.
 */
export async function withRedis<T> (fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    if (err instanceof Error && err.name === 'ReplyError') throw err
    throw new DependencyUnavailableError('redis', err)
  }
}

/** Run one Postgres operation; connection failures become 503, real query errors are rethrown as they are. */
export async function withPg<T> (fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    if (isPgUnavailable(err)) throw new DependencyUnavailableError('postgres', err)
    throw err
  }
}

/** Reject with a timeout error after `ms`, so a hung dependency cannot hang a health check. */
export async function withTimeout<T> (ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([p, timeout])
  } finally {
    clearTimeout(timer)
  }
}

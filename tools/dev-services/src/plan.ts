/**
 * Which of three situations the launcher is in for Postgres and for Redis, decided from the
 * environment and one probe of each, before anything starts. Pure: no I/O (test/plan.test.ts).
 *  1. DATABASE_URL / REDIS_URL set: use them (they must answer), start nothing;
 *  2. not set, and a server answers on the local default port: use it;
 *  3. not set, nothing usable answers: start a real one as a child ('embedded').
 */
import { DevError } from './processes.js'

/** What one probe got: it answered, nothing listens, or something answered and refused us (why). */
export type Answer = 'ok' | 'refused' | { reason: string }
export type Plan = { kind: 'given' | 'local', url: string } | { kind: 'embedded', port: number }
/** A plan and the line that says it. */
export interface Decision { plan: Plan, line: string }

export interface Probed {
  /** DATABASE_URL / REDIS_URL, '' when unset. */
  given: string
  /** The local port probed when `given` is '' (and the embedded server's preferred port). */
  port: number
  /** The answer of `given` when set, else of the local default URL. */
  answer: Answer
}

/** The URL probed on the local default port when DATABASE_URL / REDIS_URL is unset. */
export const localUrl = {
  postgres: (port: number): string => `postgres://postgres@127.0.0.1:${port}/postgres`,
  redis: (port: number): string => `redis://127.0.0.1:${port}`
}

const names = {
  postgres: { variable: 'DATABASE_URL', embedded: 'an embedded Postgres will start', get: 'a development Postgres' },
  redis: { variable: 'REDIS_URL', embedded: 'redis-server will start', get: 'a development Redis' }
}

/** host:port/db of a URL, without credentials, for the lines we print. */
export function where (url: string): string {
  const u = new URL(url)
  return `${u.hostname}:${u.port === '' ? '(default port)' : u.port}${u.pathname === '/' ? '' : u.pathname}`
}

/** The plan for one service; a DevError (the launcher's one line) when a given URL does not answer. */
export function decide (service: 'postgres' | 'redis', p: Probed): Decision {
  const { variable, embedded, get } = names[service]
  const why = (a: Exclude<Answer, 'ok'>): string => a === 'refused' ? 'nothing answers' : `it refuses (${a.reason})`
  if (p.given !== '') {
    if (p.answer !== 'ok') throw new DevError(`${service}: ${variable} (${where(p.given)}) is set but ${why(p.answer)}; start it, fix ${variable}, or unset it to get ${get}`)
    return { plan: { kind: 'given', url: p.given }, line: `${service}: using ${variable} (${where(p.given)}): it answers` }
  }
  if (p.answer === 'ok') {
    const url = localUrl[service](p.port)
    return { plan: { kind: 'local', url }, line: `${service}: ${variable} not set; a server answers on 127.0.0.1:${p.port}: using ${url}` }
  }
  return { plan: { kind: 'embedded', port: p.port }, line: `${service}: ${variable} not set and on 127.0.0.1:${p.port} ${why(p.answer)}: ${embedded}` }
}

/** A port from the environment variable `name` (1..65535), `fallback` when unset or empty. */
export function portFrom (env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name] ?? ''
  if (raw === '') return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new DevError(`Invalid environment: ${name} must be a port from 1 to 65535 (got "${raw}")`)
  return n
}

/** DATABASE_URL / REDIS_URL, when set, must be URLs with a host: checked before anything is probed. */
export function checkUrls (env: NodeJS.ProcessEnv): void {
  for (const [name, shape] of [['DATABASE_URL', 'postgres://user:password@host:5432/database'], ['REDIS_URL', 'redis://[:password@]host:6379']] as const) {
    const value = env[name] ?? ''
    if (value === '') continue
    let host = ''
    try { host = new URL(value).hostname } catch {}
    if (host === '') throw new DevError(`Invalid environment: ${name} is not a valid URL (expected ${shape})`)
  }
}

import { createHmac, randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import pg from 'pg'
import { loadConfig, type Config } from '../src/config.js'

export const DATABASE_URL = process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test'
export const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379'

/** A throwaway Postgres schema and Redis key prefix per test run, so runs never see each other's data. */
export function isolation (label: string): { schema: string, prefix: string } {
  const id = `${label}_${process.pid}_${randomBytes(3).toString('hex')}`
  return { schema: `nclust_test_${id}`, prefix: `nclust-test:${id}:` }
}

export async function dropSchema (schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: DATABASE_URL })
  await client.connect()
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
  } finally {
    await client.end()
  }
}

export async function query<T extends pg.QueryResultRow> (sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: DATABASE_URL })
  await client.connect()
  try {
    return (await client.query<T>(sql, params)).rows
  } finally {
    await client.end()
  }
}

/** Delete every key under `prefix` (SCAN, never KEYS, on the shared Redis). */
export async function deleteKeys (prefix: string): Promise<number> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 })
  await redis.connect()
  let deleted = 0
  try {
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
      cursor = next
      if (keys.length > 0) deleted += await redis.del(...keys)
    } while (cursor !== '0')
  } finally {
    redis.disconnect()
  }
  return deleted
}

export async function countKeys (prefix: string): Promise<number> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 })
  await redis.connect()
  let n = 0
  try {
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
      cursor = next
      n += keys.length
    } while (cursor !== '0')
  } finally {
    redis.disconnect()
  }
  return n
}

/** An HS256 JWT signed by hand, to forge tokens (wrong secret) or make already expired ones. */
export function signJwt (claims: Record<string, unknown>, secret: string): string {
  const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url')
  const head = b64({ alg: 'HS256', typ: 'JWT' })
  const body = b64(claims)
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url')
  return `${head}.${body}.${sig}`
}

export const TEST_SECRET = 'test-secret-0123456789-abcdefghijklmnopqrstuvwxyz'

/**
 * The env of the built example as a 2-worker cluster in its own schema and key prefix, with the test
 * secret and no cluster metrics endpoint; `overrides` win (a proxied URL, a metrics port, limits).
 */
/**
 * The tests register many users from one address within a minute, which REGISTER_RATE_LIMIT_MAX
 * (default 5) exists to stop; register.test.ts tests that limit with its own value.
 */
const registrations = { REGISTER_RATE_LIMIT_MAX: '10000' }

export function clusterEnv (iso: { schema: string, prefix: string }, overrides: Record<string, string> = {}): Record<string, string> {
  return { WORKER_COUNT: '2', DATABASE_URL, REDIS_URL, JWT_SECRET: TEST_SECRET, PG_SCHEMA: iso.schema, REDIS_PREFIX: iso.prefix, METRICS_PORT: 'off', ...registrations, ...overrides }
}

/**
 * The config of an app built in the test process (`buildApp(ctx, testConfig(...))`): the local services
 * in its own schema and key prefix, the test secret, no logs; `overrides` win (a proxied URL, limits).
 */
export function testConfig (iso: { schema: string, prefix: string }, overrides: Record<string, string> = {}): Config {
  return loadConfig({ DATABASE_URL, REDIS_URL, PG_SCHEMA: iso.schema, REDIS_PREFIX: iso.prefix, JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'silent', ...registrations, ...overrides })
}

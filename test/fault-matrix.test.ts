// The fault matrix (issue 22): a real primary with real workers, one operation in progress, one
// interruption; the primary must exit within its deadline with the right code, and no process
// (primary or worker) may be left. Table-driven: one row per cell below. It runs only in the full
// (Node 24) CI run: it lives at the repo root, outside the cluster/drain subset of Node 20/22.
//
// Workers: 2, SHUTDOWN_TIMEOUT 3000. "slow" = 1200 ms of synchronous buildApp work with an
// app-level SIGTERM listener (as close-with-grace installs), the case of issue 22; "spin" = a
// CPU-bound request in flight (the event loop busy for 2000 ms).
//
//   operation (how it is caught mid-way)        | TERM | INT | 2nd signal | HUP | worker crash | kill -9 primary
//   start, every worker slow                    |  0   |  .  |     1      |  0  |      0       |   no orphan
//   reload (SIGHUP), new generation slow        |  0   |  0  |     1      |  0  |      0       |   no orphan
//   scale up (SIGTTIN), new slot slow           |  0   |  .  |     1      |  .  |      0       |   no orphan
//   scale down (SIGTTOU), retired worker spins  |  0   |  .  |     .      |  0  |      .       |   no orphan
//   recycle (maxRequests), new generation slow  |  0   |  .  |     1      |  .  |      0       |   .
//   watchdog: a worker blocked, not yet killed  |  1 * |  .  |     .      |  .  |      .       |   no orphan **
//   watchdog kill done, slot restarting         |  0   |  .  |     .      |  .  |      .       |   .
//   crash restart, in its backoff               |  0   |  0  |     .      |  .  |      .       |   no orphan
//   crash restart, restarted worker slow        |  0   |  .  |     .      |  0  |      .       |   .
//
//   * the blocked worker cannot drain: SIGKILLed at shutdownTimeout, exit 1 (it is a worker that
//     did not drain). "." = not run: the cell repeats one above (INT is TERM's path) or cannot
//     happen (a second signal after everything already drained). A HUP or a worker crash is not
//     a shutdown: the operation settles, then SIGTERM must still end the cluster with 0.
//   ** the blocked worker never sees its channel close: the primary's reaper (src/primary/reaper.ts)
//     SIGKILLs it once the drain deadline has passed (SHUTDOWN_TIMEOUT + 2 s), then exits itself.
//   The slow cells interrupt once the new worker logged "fixture slow start": it is inside its
//   synchronous buildApp with its SIGTERM listener installed, the interleaving of issue 22.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { freePort, get, isAlive, spawnNode, waitFor, type LogLine, type Spawned } from './helpers/index.ts'
import { fixturePath, isEvent, primaryReady, unexpectedExit } from '../packages/fastify-cluster/test/start-cluster.ts'

const SHUTDOWN_TIMEOUT = 3000
const SLOW_MS = 1200
type Interrupt = 'SIGTERM' | 'SIGINT' | 'second' | 'SIGHUP' | 'worker-crash' | 'kill-9'

interface Ctx { p: Spawned, port: number }
interface Op {
  env: Record<string, string>
  /** Wait for every worker ready first (all but `start`). */
  ready: boolean
  /** Start the operation and return once it is under way; returns the pid a `worker-crash` kills. */
  begin: (c: Ctx) => Promise<number>
  /** The operation is over (after a HUP or a worker crash): the cluster is steady again. */
  settled: (lines: LogLine[]) => boolean
}

const msg = (l: LogLine): string => typeof l.msg === 'string' ? l.msg : ''
const readyPids = (p: Spawned): number[] => p.lines.filter(primaryReady).map((l) => l.workerPid as number)
const line = async (p: Spawned, pred: (l: LogLine) => boolean, what: string): Promise<LogLine> => await p.waitForLine(pred, 30_000, what)
const slowNew = { FIXTURE_SLOW_MS: String(SLOW_MS), FIXTURE_SLOW_WHICH: 'new' }
const slowStart = (l: LogLine): boolean => l.msg === 'fixture slow start'
const count = (lines: LogLine[], re: RegExp): number => lines.filter((l) => re.test(msg(l))).length

const ops: Record<string, Op> = {
  start: {
    env: { FIXTURE_SLOW_MS: String(SLOW_MS), FIXTURE_SLOW_WHICH: 'all' },
    ready: false,
    begin: async ({ p }) => {
      await waitFor(() => p.lines.filter(slowStart).length >= 2, 'both workers in their slow buildApp', 30_000)
      return p.lines.find(slowStart)?.pid as number
    },
    settled: (lines) => count(lines, /^worker ready$/) >= 2
  },
  reload: {
    env: slowNew,
    ready: true,
    begin: async ({ p }) => {
      const old = readyPids(p)[0] as number
      p.child.kill('SIGHUP')
      await line(p, (l) => slowStart(l) && l.generation === 1, 'the reload\'s first new worker in its slow buildApp')
      return old
    },
    settled: (lines) => count(lines, /^rolling reload (done|failed)/) >= 1
  },
  'scale up': {
    env: slowNew,
    ready: true,
    begin: async ({ p }) => {
      const old = readyPids(p)[0] as number
      p.child.kill('SIGTTIN')
      await line(p, (l) => slowStart(l) && l.workerId === 2, 'the new slot\'s worker in its slow buildApp')
      return old
    },
    settled: (lines) => count(lines, /^(scaled to|scaling failed)/) >= 1
  },
  'scale down': {
    env: {},
    ready: true,
    begin: async ({ p, port }) => {
      // One CPU-bound request on each worker (round-robin over two fresh connections).
      for (let i = 0; i < 2; i++) void get(port, '/spin?ms=2000', { timeout: 20_000 }).catch(() => {})
      await waitFor(() => p.lines.filter((l) => l.msg === 'incoming request').length >= 2, 'two requests in flight')
      p.child.kill('SIGTTOU')
      await line(p, (l) => msg(l).startsWith('scaling from 2 to 1'), 'the scale down')
      return readyPids(p)[1] as number
    },
    settled: (lines) => count(lines, /^scaled to 1 workers/) >= 1
  },
  recycle: {
    env: { ...slowNew, MAX_REQUESTS: '3', FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval: 200 }) },
    ready: true,
    begin: async ({ p, port }) => {
      for (let i = 0; i < 8; i++) await get(port, '/')
      const start = await line(p, isEvent('recycle'), 'a recycle')
      await line(p, (l) => slowStart(l) && l.generation === 1, 'the new worker in its slow buildApp')
      return start.workerPid as number
    },
    settled: (lines) => count(lines, /^(recycle done|recycle: worker)/) >= 1
  },
  'watchdog, blocked': {
    // Long enough that the interruption lands before the watchdog's verdict even on a loaded machine.
    env: { HEARTBEAT_TIMEOUT: '6000', FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval: 200 }) },
    ready: true,
    begin: async ({ port }) => ((await get(port, '/block', { timeout: 10_000 })).json() as { blocking: number }).blocking,
    settled: () => true
  },
  'watchdog, restarting': {
    env: { HEARTBEAT_TIMEOUT: '1500', FIXTURE_OPTIONS: JSON.stringify({ heartbeatInterval: 200, restartBackoff: { initialDelay: 1500 } }) },
    ready: true,
    begin: async ({ p, port }) => {
      const { blocking } = (await get(port, '/block', { timeout: 10_000 })).json() as { blocking: number }
      await p.waitForLine((l) => unexpectedExit(l) && l.reason === 'hung', 20_000, 'the watchdog\'s kill')
      return blocking
    },
    settled: () => true
  },
  'crash restart, backoff': {
    env: { FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 1500 } }) },
    ready: true,
    begin: async ({ p, port }) => {
      const { crashing } = (await get(port, '/crash')).json() as { crashing: number }
      await line(p, isEvent('restart'), 'the restart in its backoff')
      return crashing
    },
    settled: () => true
  },
  'crash restart, slow': {
    env: { ...slowNew, FIXTURE_OPTIONS: JSON.stringify({ restartBackoff: { initialDelay: 50 } }) },
    ready: true,
    begin: async ({ p, port }) => {
      const { crashing } = (await get(port, '/crash')).json() as { crashing: number }
      await line(p, (l) => slowStart(l) && l.generation === 1, 'the restarted worker in its slow buildApp')
      return crashing
    },
    settled: (lines) => lines.some((l) => primaryReady(l) && l.generation === 1)
  }
}

// [operation, interruption, expected exit code (null: the primary is SIGKILLed)]
const cells: Array<[keyof typeof ops, Interrupt, number | null]> = [
  ['start', 'SIGTERM', 0], ['start', 'second', 1], ['start', 'SIGHUP', 0], ['start', 'worker-crash', 0], ['start', 'kill-9', null],
  ['reload', 'SIGTERM', 0], ['reload', 'SIGINT', 0], ['reload', 'second', 1], ['reload', 'SIGHUP', 0], ['reload', 'worker-crash', 0], ['reload', 'kill-9', null],
  ['scale up', 'SIGTERM', 0], ['scale up', 'second', 1], ['scale up', 'worker-crash', 0], ['scale up', 'kill-9', null],
  ['scale down', 'SIGTERM', 0], ['scale down', 'SIGHUP', 0], ['scale down', 'kill-9', null],
  ['recycle', 'SIGTERM', 0], ['recycle', 'second', 1], ['recycle', 'worker-crash', 0],
  ['watchdog, blocked', 'SIGTERM', 1], ['watchdog, blocked', 'kill-9', null],
  ['watchdog, restarting', 'SIGTERM', 0],
  ['crash restart, backoff', 'SIGTERM', 0], ['crash restart, backoff', 'SIGINT', 0], ['crash restart, backoff', 'kill-9', null],
  ['crash restart, slow', 'SIGTERM', 0], ['crash restart, slow', 'SIGHUP', 0]
]

/** How long the primary may take to exit once interrupted: the drain deadline, a slow start, a margin. */
const DEADLINE = SHUTDOWN_TIMEOUT + SLOW_MS + 4000

for (const [name, interrupt, expected] of cells) {
  test(`${name} x ${interrupt}: ${expected === null ? 'every worker follows the SIGKILLed primary' : `exit ${expected}`}, no process left`, async (t) => {
    const op = ops[name] as Op
    const port = await freePort()
    // The plain app, slow to start where the cell asks (FIXTURE_SLOW_MS).
    const p = spawnNode(fixturePath('slow-start-app.mjs'), {
      env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', SHUTDOWN_TIMEOUT: String(SHUTDOWN_TIMEOUT), ...op.env }
    })
    t.after(() => p.cleanup())
    if (op.ready) await waitFor(() => readyPids(p).length >= 2, 'two workers ready', 60_000)
    const victim = await op.begin({ p, port })

    if (interrupt === 'SIGHUP' || interrupt === 'worker-crash') {
      // Not a shutdown: the operation (and whatever the interruption started) settles first.
      const mark = p.lines.length
      if (interrupt === 'SIGHUP') p.child.kill('SIGHUP')
      else process.kill(victim, 'SIGKILL')
      const after = (): LogLine[] => p.lines.slice(mark)
      if (interrupt === 'SIGHUP') await waitFor(() => count(after(), /^rolling reload (done|failed)/) >= 1, 'the reload SIGHUP asked for', 30_000)
      else await waitFor(() => op.settled(p.lines) && after().some((l) => primaryReady(l) || unexpectedExit(l)), 'the operation settled', 30_000)
      p.child.kill('SIGTERM')
    } else if (interrupt === 'second') {
      p.child.kill('SIGTERM')
      await line(p, (l) => msg(l).startsWith('shutting down'), 'the shutdown')
      p.child.kill('SIGTERM')
    } else if (interrupt === 'kill-9') {
      p.child.kill('SIGKILL')
    } else {
      p.child.kill(interrupt)
    }

    const t0 = Date.now()
    const exit = await p.waitForExit(DEADLINE)
    const ms = Date.now() - t0
    t.diagnostic(`${name} x ${interrupt}: exit ${String(exit.code ?? exit.signal)} in ${ms} ms`)
    if (expected === null) assert.equal(exit.signal, 'SIGKILL')
    else assert.equal(exit.code, expected, `exit code (output tail:\n${p.output().slice(-3000)})`)
    // Every pid it ever logged (workers included) is gone; after a kill -9 of the primary, the
    // workers notice the closed channel on their own (a slow one once its synchronous work ends),
    // and a blocked one is killed by the reaper, which is gone too.
    const reaper = p.lines.find((l) => typeof l.reaperPid === 'number')?.reaperPid as number | undefined
    if (reaper !== undefined) p.track(reaper)
    const pids = [...p.knownPids(), ...(reaper === undefined ? [] : [reaper])]
    await waitFor(() => pids.every((pid) => !isAlive(pid)), `no process left (alive: ${pids.filter(isAlive).join(', ')})`, expected === null ? SLOW_MS + 8000 : 3000)
    if (expected !== null) assert.ok(p.lines.some((l) => msg(l).startsWith('cluster stopped')), 'the primary logged "cluster stopped"')
    assert.ok(reaper !== undefined, 'the primary logged its reaper\'s pid')
  })
}

import { EventEmitter } from 'node:events'
import Fastify, { type FastifyInstance } from 'fastify'
import { Registry, Summary } from 'prom-client'
import { pidMetrics, type PrimaryLike, type ScrapeResult, type WorkerScrape } from '../src/index.js'

/** An in-process "worker": a real Fastify app with pidMetrics on its own registry, under a fake pid. */
export class FakeWorker {
  /** Milliseconds the worker takes to answer (simulates a blocked event loop when > timeout). */
  delay = 0
  alive = true
  fail: string | undefined
  private constructor (readonly workerId: number, public pid: number, public app: FastifyInstance) {}

  static async start (workerId: number, pid: number): Promise<FakeWorker> {
    return new FakeWorker(workerId, pid, await FakeWorker.build(workerId))
  }

  private static async build (workerId: number): Promise<FastifyInstance> {
    const registry = new Registry()
    const app = Fastify()
    await app.register(pidMetrics, { registry, worker: String(workerId), endpoint: false })
    // A summary, to check quantiles are never summed across workers.
    const s = new Summary({ name: 'job_seconds', help: 'a summary', percentiles: [0.5, 0.99], registers: [registry] })
    app.get('/hello', async () => 'hi')
    app.get('/items/:id', async () => { s.observe(workerId + 1); return 'item' })
    await app.ready()
    return app
  }

  /** Simulate the supervisor replacing this slot's process. */
  async replace (newPid: number): Promise<void> {
    await this.app.close()
    this.app = await FakeWorker.build(this.workerId)
    this.pid = newPid
    this.alive = true
  }

  async hit (n: number, url = '/hello'): Promise<void> {
    for (let i = 0; i < n; i++) await this.app.inject(url)
  }

  async scrape (): Promise<WorkerScrape> {
    const s = await this.app.pidMetrics.scrape()
    const pid = String(this.pid)
    for (const f of s.metrics) for (const v of f.values) v.labels = { ...v.labels, pid }
    // What JSON over IPC does to numbers (NaN becomes null).
    return JSON.parse(JSON.stringify({ ...s, pid: this.pid })) as WorkerScrape
  }
}

/** A primary handle double: requestAll asks the fake workers with a per-worker timeout, like the real one. */
export class FakePrimary implements PrimaryLike {
  readonly role = 'primary' as const
  readonly events = new EventEmitter()
  readonly closers: Array<() => void | Promise<void>> = []
  /** Every requestAll() call: channel and timeout, to count IPC rounds. */
  readonly rounds: Array<{ channel: string, timeout: number | undefined }> = []
  constructor (readonly fleet: FakeWorker[]) {}
  get size (): number { return this.fleet.length }

  workers (): ReturnType<PrimaryLike['workers']> {
    return this.fleet.filter((w) => w.alive).map((w) => ({ workerId: w.workerId, pid: w.pid, state: 'ready', generation: 0, startedAt: 0, restarts: 0 }))
  }

  requestAll = (async (channel: string, _payload?: unknown, options?: { timeout?: number }): Promise<ScrapeResult[]> => {
    this.rounds.push({ channel, timeout: options?.timeout })
    const timeout = options?.timeout ?? 1000
    return await Promise.all(this.fleet.filter((w) => w.alive).map(async (w): Promise<ScrapeResult> => {
      const start = Date.now()
      const answer = (async () => {
        if (w.delay > 0) await new Promise((resolve) => setTimeout(resolve, w.delay))
        if (w.fail !== undefined) throw new Error(w.fail)
        return await w.scrape()
      })()
      let timer: NodeJS.Timeout | undefined
      const timedOut = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${timeout} ms`)), timeout) })
      try {
        const value = await Promise.race([answer, timedOut])
        return { workerId: w.workerId, pid: w.pid, ok: true, value, ms: Date.now() - start }
      } catch (err) {
        answer.catch(() => {})
        return { workerId: w.workerId, pid: w.pid, ok: false, error: (err as Error).message, ms: Date.now() - start }
      } finally {
        clearTimeout(timer)
      }
    }))
  }) as PrimaryLike['requestAll']

  onClose (fn: () => void | Promise<void>): void { this.closers.push(fn) }
  async close (): Promise<void> {
    for (const fn of this.closers) await fn()
    for (const w of this.fleet) await w.app.close()
  }
}

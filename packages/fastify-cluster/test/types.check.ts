// Type test: checked by `pnpm typecheck` (tsconfig.test.json), never run. It fails the build if a
// public type stops being exported or changes shape.
import type { FastifyInstance } from 'fastify'
import {
  startClustered, onPrimaryRequest, currentWorker, resolveOptions, errors, defaultWorkerCount, cgroupCpuQuota, kernelBalanceUnsupported,
  type Balance, type WorkerCountChoice, type WorkerCountInput,
  type ClusterHandle, type PrimaryHandle, type WorkerHandle, type SingleHandle, type WorkerContext,
  type WorkerInfo, type WorkerExitEvent, type ClusterOptions, type RequestResult, type BuildApp, type ExitReason,
  type ScaleResult, type HungEvent, type RecycleEvent, type StartFailedEvent
} from '@nclust/fastify-cluster'

declare const app: FastifyInstance

const build: BuildApp = (ctx: WorkerContext) => {
  const id: number = ctx.workerId
  const n: number = ctx.workers
  const single: boolean = ctx.single
  ctx.logger.info({ id, n, single }, 'building')
  return app
}

const options: ClusterOptions = { workers: 2, port: 0, host: '127.0.0.1', shutdownTimeout: 1000, restartBackoff: { initialDelay: 10 }, crashLoop: { maxFailures: 3 } }
// @ts-expect-error unknown keys are a type error too
const typo: ClusterOptions = { wrokers: 2 }
void typo

export async function check (): Promise<void> {
  const handle: ClusterHandle = await startClustered(build, options)
  if (handle.role === 'primary') {
    const p: PrimaryHandle = handle
    const list: WorkerInfo[] = p.workers()
    p.events.on('worker-exit', (e: WorkerExitEvent) => {
      const reason: ExitReason = e.reason
      void reason
    })
    p.events.on('hung', (e: HungEvent) => { const frames: string[] = e.frames; const report: string | undefined = e.report; void frames; void report })
    p.events.on('recycle', (e: RecycleEvent) => { const why: 'maxRequests' | 'maxRss' = e.why; void why })
    p.events.on('start-failed', (e: StartFailedEvent) => { const tries: number = e.tries; void tries })
    p.events.on('scale', (e) => { if (e.phase === 'done') { const ok: boolean = e.ok; void ok } })
    const scaled: ScaleResult = await p.scale(4)
    const size: number = p.size
    const hung: ExitReason = 'hung'
    const recycled: ExitReason = 'recycle'
    void scaled; void size; void hung; void recycled
    const lifecycle: ClusterOptions = { startRetries: 5, heartbeatInterval: 500, heartbeatTimeout: 0, maxRequests: 10000, maxRequestsJitter: 500, maxRss: 512 }
    void lifecycle
    const all: Array<RequestResult<string>> = await p.requestAll<string>('x', undefined, { timeout: 10 })
    const code: number = await p.close()
    void list; void all; void code
  } else if (handle.role === 'worker') {
    const w: WorkerHandle = handle
    const a: FastifyInstance = w.app
    void a
  } else {
    const s: SingleHandle = handle
    await s.close()
  }
  const off: () => void = onPrimaryRequest('x', async () => 1)
  off()
  const ctx: WorkerContext | undefined = currentWorker()
  void ctx
  void resolveOptions({ workers: 1 }).workers.toFixed()
  void new errors.NCLUST_CLUSTER_INVALID_OPTION('option x', 'y', 'z').code
  const balance: Balance = resolveOptions({ balance: 'primary' }).balance
  const from: string = resolveOptions({}).workersFrom
  const input: WorkerCountInput = { root: '/', available: 2, cores: 64 }
  const choice: WorkerCountChoice = defaultWorkerCount(input)
  const n: number = choice.workers
  const q: number | undefined = cgroupCpuQuota('/')?.cpus
  const why: string | undefined = kernelBalanceUnsupported('v24.0.0', 'linux')
  // @ts-expect-error only 'primary' or 'kernel'
  const bad: ClusterOptions = { balance: 'round-robin' }
  void balance; void from; void n; void q; void why; void bad
}

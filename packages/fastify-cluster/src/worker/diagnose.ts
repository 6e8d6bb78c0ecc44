import { closeSync, mkdirSync, openSync, statSync, writeSync } from 'node:fs'
import { isAbsolute, join, resolve } from 'node:path'
import { Session } from 'node:inspector'
import type { WorkerContext } from '../types.js'
import type { DiagnoseRequest, DiagnoseResult } from '../control-protocol.js'
import type { ResolvedOptions } from '../options.js'
import { pruneReports } from '../probe.js'

/**
 * `nclust diagnose`: in the worker itself, asked over the IPC request/reply channel, while the
 * other workers serve. A heap snapshot pauses this worker's event loop for as long as it takes to
 * write (about a second per 100 MB of heap); a CPU profile samples for `ms` while it keeps serving;
 * a report is a few milliseconds. Files are created 0600 (O_EXCL) in a folder only their user may write.
 * In the cluster's report folder (no `--out`), the folder is then capped like hang reports
 * (`reportMaxFiles`, `reportMaxBytes`: the oldest nclust files removed first, the new one kept).
 */
export async function diagnose (payload: unknown, ctx: WorkerContext,
  options?: Pick<ResolvedOptions, 'reportDirectory' | 'reportMaxFiles' | 'reportMaxBytes'>): Promise<DiagnoseResult> {
  const req = payload as Partial<DiagnoseRequest>
  if (typeof req.dir !== 'string' || !isAbsolute(req.dir)) throw new Error('diagnose: dir must be an absolute path')
  privateDir(req.dir)
  const t0 = Date.now()
  const stamp = new Date(t0).toISOString().replace(/[:.]/g, '-')
  const base = join(req.dir, `nclust-w${ctx.workerId}-${process.pid}-${stamp}`)
  let file: string
  let bytes: number
  switch (req.kind) {
    case 'report': {
      file = `${base}.report.json`
      bytes = writePrivate(file, [JSON.stringify(reportWithoutEnv(), null, 2)])
      break
    }
    case 'heap': {
      file = `${base}.heapsnapshot`
      bytes = await heapSnapshot(file)
      break
    }
    case 'cpu': {
      const ms = req.ms
      if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 1 || ms > 600_000) throw new Error('diagnose: --cpu needs a duration from 1 to 600000 ms')
      file = `${base}.cpuprofile`
      bytes = writePrivate(file, [JSON.stringify(await cpuProfile(ms))])
      break
    }
    default: throw new Error(`diagnose: unknown kind ${JSON.stringify(req.kind)}, expected report, heap or cpu`)
  }
  if (options !== undefined && resolve(req.dir) === resolve(options.reportDirectory)) {
    pruneReports(req.dir, { maxFiles: options.reportMaxFiles, maxBytes: options.reportMaxBytes })
  }
  return { file, bytes, ms: Date.now() - t0, pid: process.pid }
}

/** Create `dir` 0700 if missing; refuse one other users may write (a file there could be swapped or read). */
function privateDir (dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const st = statSync(dir)
  if (!st.isDirectory()) throw new Error(`diagnose: ${dir} is not a folder`)
  if ((st.mode & 0o022) !== 0) throw new Error(`diagnose: ${dir} is writable by other users; give a private folder (--out)`)
  if (typeof process.getuid === 'function' && st.uid !== process.getuid()) throw new Error(`diagnose: ${dir} belongs to another user`)
}

function writePrivate (file: string, chunks: Iterable<string>): number {
  const fd = openSync(file, 'wx', 0o600)
  let bytes = 0
  try {
    for (const c of chunks) bytes += writeSync(fd, c)
  } finally { closeSync(fd) }
  return bytes
}

/**
 * The diagnostic report without environment values (they hold secrets): `excludeEnv` where Node
 * has it, and the field redacted in every case, in the main report and each thread's subreport.
 */
function reportWithoutEnv (): Record<string, unknown> {
  const report = process.report as NodeJS.ProcessReport & { excludeEnv?: boolean }
  const had = report.excludeEnv
  const settable = typeof had === 'boolean'
  if (settable) report.excludeEnv = true
  try {
    const r = report.getReport() as unknown as Record<string, unknown>
    // Node 20 fills the field despite excludeEnv, and each worker thread's subreport (the hang probe) has its own.
    for (const part of [r, ...(Array.isArray(r.workers) ? r.workers as Array<Record<string, unknown>> : [])]) {
      if (typeof part === 'object' && part !== null && 'environmentVariables' in part) part.environmentVariables = '[redacted by nclust]'
    }
    return r
  } finally {
    if (settable && had !== undefined) report.excludeEnv = had
  }
}

function post<T> (session: Session, method: string, params?: object): Promise<T> {
  return new Promise((resolve, reject) => {
    session.post(method, params ?? {}, (err, result) => { if (err !== null) reject(err); else resolve(result as T) })
  })
}

/** The snapshot streamed chunk by chunk into the file, never whole in memory. */
async function heapSnapshot (file: string): Promise<number> {
  const fd = openSync(file, 'wx', 0o600)
  const session = new Session()
  session.connect()
  let bytes = 0
  try {
    session.on('HeapProfiler.addHeapSnapshotChunk', (m) => { bytes += writeSync(fd, m.params.chunk) })
    await post(session, 'HeapProfiler.takeHeapSnapshot', { reportProgress: false })
  } finally {
    session.disconnect()
    closeSync(fd)
  }
  return bytes
}

async function cpuProfile (ms: number): Promise<unknown> {
  const session = new Session()
  session.connect()
  try {
    await post(session, 'Profiler.enable')
    await post(session, 'Profiler.start')
    await new Promise((resolve) => setTimeout(resolve, ms))
    const { profile } = await post<{ profile: unknown }>(session, 'Profiler.stop')
    return profile
  } finally {
    session.disconnect()
  }
}

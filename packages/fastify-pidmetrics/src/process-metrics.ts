import { readdirSync, readFileSync } from 'node:fs'
import type { Family, Labels } from './merge.js'

/**
 * The primary's own process and Node.js series, under the names, help texts and types of prom-client's
 * default metrics, so they join the workers' families of the same name in the cluster scrape. Computed
 * here rather than with prom-client's files to keep prom-client (and its `node:v8` and `perf_hooks`
 * monitor) out of the primary: see exposition.ts. Left out: the event-loop lag percentiles (they need a
 * perf_hooks histogram running all the time), gc, heap spaces, handles/requests/resources.
 */

// As prom-client computes it: once, when the module loads.
const startTimeSeconds = Math.round(Date.now() / 1000 - process.uptime())
const versionSegments = process.version.slice(1).split('.').map(Number)

/** `Max open files` soft limit from /proc/self/limits; undefined where there is no such file. */
function readMaxFds (): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))
    if (line === undefined) return undefined
    const max = Number(line.split(/ {2,}/)[1])
    return Number.isNaN(max) ? undefined : max
  } catch {
    return undefined
  }
}

/** VmRSS, VmSize and VmData of /proc/self/status in bytes; undefined off Linux. */
function readProcStatus (): { rss: number, virtual: number, data: number } | undefined {
  if (process.platform !== 'linux') return undefined
  try {
    const status = readFileSync('/proc/self/status', 'utf8')
    const kb = (field: string): number => Number(new RegExp(`^${field}:\\s*(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
    return { rss: kb('VmRSS'), virtual: kb('VmSize'), data: kb('VmData') }
  } catch {
    return undefined
  }
}

function openFds (): number | undefined {
  if (process.platform !== 'linux') return undefined
  try {
    // Minus the descriptor readdirSync itself opened (closed by now), as prom-client counts.
    return readdirSync('/proc/self/fd').length - 1
  } catch {
    return undefined
  }
}

function memoryUsage (): NodeJS.MemoryUsage | undefined {
  try {
    return process.memoryUsage()
  } catch {
    return undefined // it can throw on some platforms (prom-client guards it the same way)
  }
}

/**
 * Seconds until a `setImmediate` runs: how long the event loop takes to come round, the way prom-client's
 * `nodejs_eventloop_lag_seconds` measures it. prom-client reports the previous scrape's measurement;
 * a scrape here awaits its own.
 */
export function measureEventLoopLag (): Promise<number> {
  const start = process.hrtime.bigint()
  return new Promise((resolve) => setImmediate(() => resolve(Number(process.hrtime.bigint() - start) / 1e9)))
}

export interface PrimaryProcessMetrics {
  /** The series now, each labelled `pid` and `worker="primary"`; `lagSeconds` from {@link measureEventLoopLag}. */
  families (lagSeconds: number): Family[]
}

export function primaryProcessMetrics (): PrimaryProcessMetrics {
  const labels: Labels = { pid: String(process.pid), worker: 'primary' }
  const maxFds = readMaxFds()
  const one = (name: string, help: string, type: 'gauge' | 'counter', value: number, aggregator = 'sum', own: Labels = {}): Family =>
    ({ name, help, type, aggregator, values: [{ value, labels: { ...own, ...labels } }] })

  return {
    families (lagSeconds) {
      const out: Family[] = []
      out.push(one('process_start_time_seconds', 'Start time of the process since unix epoch in seconds.', 'gauge', startTimeSeconds, 'omit'))
      const memory = memoryUsage()
      const status = readProcStatus()
      if (status !== undefined) {
        out.push(one('process_resident_memory_bytes', 'Resident memory size in bytes.', 'gauge', status.rss))
        out.push(one('process_virtual_memory_bytes', 'Virtual memory size in bytes.', 'gauge', status.virtual))
        out.push(one('process_heap_bytes', 'Process heap size in bytes.', 'gauge', status.data))
      } else if (memory !== undefined) {
        out.push(one('process_resident_memory_bytes', 'Resident memory size in bytes.', 'gauge', memory.rss))
      }
      const fds = openFds()
      if (fds !== undefined) out.push(one('process_open_fds', 'Number of open file descriptors.', 'gauge', fds))
      if (maxFds !== undefined) out.push(one('process_max_fds', 'Maximum number of open file descriptors.', 'gauge', maxFds))
      out.push(one('nodejs_eventloop_lag_seconds', 'Lag of event loop in seconds.', 'gauge', lagSeconds, 'average'))
      if (memory !== undefined) {
        out.push(one('nodejs_heap_size_total_bytes', 'Process heap size from Node.js in bytes.', 'gauge', memory.heapTotal))
        out.push(one('nodejs_heap_size_used_bytes', 'Process heap size used from Node.js in bytes.', 'gauge', memory.heapUsed))
        out.push(one('nodejs_external_memory_bytes', 'Node.js external memory size in bytes.', 'gauge', memory.external))
      }
      const [major, minor, patch] = versionSegments
      out.push(one('nodejs_version_info', 'Node.js version info.', 'gauge', 1, 'first', { version: process.version, major: major ?? NaN, minor: minor ?? NaN, patch: patch ?? NaN }))
      // CPU time since the process started (prom-client counts from when its counters were created).
      const cpu = process.cpuUsage()
      out.push(one('process_cpu_user_seconds_total', 'Total user CPU time spent in seconds.', 'counter', cpu.user / 1e6))
      out.push(one('process_cpu_system_seconds_total', 'Total system CPU time spent in seconds.', 'counter', cpu.system / 1e6))
      out.push(one('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.', 'counter', (cpu.user + cpu.system) / 1e6))
      return out
    }
  }
}

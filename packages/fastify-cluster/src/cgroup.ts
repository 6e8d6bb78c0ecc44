import { readFileSync, existsSync } from 'node:fs'
import { availableParallelism, cpus } from 'node:os'
import { join, posix } from 'node:path'

/**
 * The default worker count, honouring a container's CPU quota on every supported Node.
 *
 * `os.availableParallelism()` follows the CPU affinity mask, but on Node 20 (libuv 1.46) it ignores
 * a cgroup CPU quota: a pod limited to 2 CPUs on a 64-core node would fork 64 workers that share 2
 * CPUs of time. This reads the quota itself, the way the kernel applies it:
 *
 * - cgroup v2: `cpu.max` (`<quota> <period>` or `max <period>`) of the process's cgroup and of every
 *   ancestor up to the mount point (a parent's limit binds its children); the smallest wins;
 * - cgroup v1: `cpu.cfs_quota_us` / `cpu.cfs_period_us` (`-1`: unlimited) along the same path in the
 *   hierarchy that has the `cpu` controller.
 *
 * The process's cgroup comes from `/proc/self/cgroup`, the mount points and their roots from
 * `/proc/self/mountinfo` (with the usual `/sys/fs/cgroup` layout as the fallback). The count is
 * `ceil(quota / period)`, capped at `os.availableParallelism()` and never below 1.
 * Pure apart from reading files under `root` (`/` in production, a fixture tree in tests).
 */

export interface WorkerCountInput {
  /** Where `proc/` and `sys/` are read from (default `/`). */
  root?: string
  /** The ceiling (default `os.availableParallelism()`). */
  available?: number
  /** Cores shown in the explanation (default `os.cpus().length`, at least `available`). */
  cores?: number
}

export interface WorkerCountChoice {
  workers: number
  /** Why, for the primary's start line: `cgroup quota 2.0 CPUs of 64 cores`. */
  reason: string
  /** The binding quota in CPUs (quota / period), when there is one. */
  quota?: number
  /** Which file set it. */
  source?: string
}

interface Mount { root: string, point: string, fstype: string, superOptions: string[] }

function read (root: string, file: string): string | undefined {
  try { return readFileSync(join(root, file), 'utf8') } catch { return undefined }
}

function mounts (root: string): Mount[] {
  const text = read(root, '/proc/self/mountinfo')
  if (text === undefined) return []
  const out: Mount[] = []
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ')
    if (left === undefined || right === undefined) continue
    const f = left.split(' ')
    const [fstype, , superOptions] = right.split(' ')
    if (f[3] === undefined || f[4] === undefined || fstype === undefined) continue
    out.push({ root: f[3], point: f[4], fstype, superOptions: (superOptions ?? '').split(',') })
  }
  return out
}

/** The directories from the process's cgroup up to the hierarchy's mount point, innermost first. */
function chain (root: string, mount: { root: string, point: string }, cgroupPath: string): string[] {
  let rel = cgroupPath
  if (mount.root !== '/' && (rel === mount.root || rel.startsWith(mount.root + '/'))) rel = rel.slice(mount.root.length)
  else if (mount.root !== '/') rel = '/' // a host path we cannot map into this mount: its root is ours
  let dir = posix.join(mount.point, rel)
  // Without a cgroup namespace the path may name a host directory that is not mounted here.
  if (!existsSync(join(root, dir))) dir = mount.point
  const dirs: string[] = []
  for (;;) {
    dirs.push(dir)
    if (dir === mount.point || dir === '/' || !dir.startsWith(mount.point)) break
    dir = posix.dirname(dir)
  }
  return dirs
}

interface Quota { cpus: number, source: string }

function smallest (a: Quota | undefined, b: Quota | undefined): Quota | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  return b.cpus < a.cpus ? b : a
}

function positive (text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const n = Number(text.trim())
  return Number.isFinite(n) && n > 0 ? n : undefined
}

/** The tightest CPU quota that applies to this process, in CPUs, or undefined when unlimited or unknown. */
export function cgroupCpuQuota (root = '/'): Quota | undefined {
  const cgroupFile = read(root, '/proc/self/cgroup')
  if (cgroupFile === undefined) return undefined
  const all = mounts(root)
  let best: Quota | undefined
  for (const line of cgroupFile.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim())
    if (m === null) continue
    const [, id, controllers, path] = m as unknown as [string, string, string, string]
    if (id === '0' && controllers === '') {
      // cgroup v2 (unified): cpu.max along the path.
      const mount = all.find((x) => x.fstype === 'cgroup2') ?? { root: '/', point: '/sys/fs/cgroup' }
      for (const dir of chain(root, mount, path)) {
        const [quota, period] = (read(root, posix.join(dir, 'cpu.max')) ?? '').trim().split(/\s+/)
        const q = quota === 'max' ? undefined : positive(quota)
        const p = positive(period)
        if (q !== undefined && p !== undefined) best = smallest(best, { cpus: q / p, source: posix.join(dir, 'cpu.max') })
      }
    } else if (controllers.split(',').includes('cpu')) {
      // cgroup v1: the hierarchy with the cpu controller.
      const mount = all.find((x) => x.fstype === 'cgroup' && x.superOptions.includes('cpu')) ??
        { root: '/', point: existsSync(join(root, '/sys/fs/cgroup/cpu,cpuacct')) ? '/sys/fs/cgroup/cpu,cpuacct' : '/sys/fs/cgroup/cpu' }
      for (const dir of chain(root, mount, path)) {
        const q = positive(read(root, posix.join(dir, 'cpu.cfs_quota_us'))) // -1: unlimited
        const p = positive(read(root, posix.join(dir, 'cpu.cfs_period_us')))
        if (q !== undefined && p !== undefined) best = smallest(best, { cpus: q / p, source: posix.join(dir, 'cpu.cfs_quota_us') })
      }
    }
  }
  return best
}

/** The default worker count and the reason, for the primary's start line. */
export function defaultWorkerCount (input: WorkerCountInput = {}): WorkerCountChoice {
  const available = Math.max(1, input.available ?? availableParallelism())
  const cores = Math.max(available, input.cores ?? cpus().length)
  const quota = cgroupCpuQuota(input.root ?? '/')
  if (quota === undefined) {
    return { workers: available, reason: `os.availableParallelism() ${available}, no cgroup CPU quota` }
  }
  const workers = Math.min(available, Math.max(1, Math.ceil(quota.cpus - 1e-9)))
  const capped = Math.ceil(quota.cpus - 1e-9) > available ? `, capped at os.availableParallelism() ${available}` : ''
  return {
    workers,
    reason: `cgroup quota ${quota.cpus.toFixed(1)} CPUs of ${cores} cores${capped}`,
    quota: quota.cpus,
    source: quota.source
  }
}

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { defaultWorkerCount, cgroupCpuQuota } from '../src/cgroup.ts'
import { resolveOptions } from '../src/options.ts'
import { freePort, spawnNode, waitFor } from '../../../test/helpers/index.ts'
import { primaryReady } from './start-cluster.ts'

// Fixture trees under test/fixtures/cgroup/<case>/ hold proc/self/{cgroup,mountinfo} and sys/fs/cgroup/...
// as the kernel lays them out, so the real file reading is what is tested.
const root = (name: string): string => fileURLToPath(new URL(`./fixtures/cgroup/${name}/`, import.meta.url))
const pick = (name: string, available = 64, cores = 64): ReturnType<typeof defaultWorkerCount> =>
  defaultWorkerCount({ root: root(name), available, cores })

test('cgroup v2: cpu.max "200000 100000" on a 64-core host gives 2 workers, and says why', () => {
  const c = pick('v2')
  assert.equal(c.workers, 2)
  assert.equal(c.reason, 'cgroup quota 2.0 CPUs of 64 cores')
  assert.equal(c.source, '/sys/fs/cgroup/cpu.max')
})

test('cgroup v2: "max" is no quota: availableParallelism', () => {
  const c = pick('v2-max', 64)
  assert.equal(c.workers, 64)
  assert.equal(c.quota, undefined)
  assert.match(c.reason, /^os\.availableParallelism\(\) 64, no cgroup CPU quota$/)
})

test('cgroup v2 nested path from /proc/self/cgroup: an ancestor\'s 1.5 CPUs binds the unlimited leaf; ceil gives 2', () => {
  const c = pick('v2-nested')
  assert.equal(c.workers, 2)
  assert.equal(c.quota, 1.5)
  assert.equal(c.source, '/sys/fs/cgroup/kubepods.slice/kubepods-pod1.slice/cpu.max')
  assert.equal(c.reason, 'cgroup quota 1.5 CPUs of 64 cores')
})

test('cgroup v2: half a CPU still gives 1 worker, never 0', () => {
  const c = pick('v2-half')
  assert.equal(c.workers, 1)
  assert.equal(c.reason, 'cgroup quota 0.5 CPUs of 64 cores')
})

test('cgroup v2: a host path that is not mounted in the container falls back to the mount root', () => {
  assert.equal(pick('v2-hostpath').workers, 3)
})

test('cgroup v1: cfs_quota_us / cfs_period_us, with the mount root of the container\'s cgroup', () => {
  const c = pick('v1')
  assert.equal(c.workers, 3)
  assert.equal(c.reason, 'cgroup quota 3.0 CPUs of 64 cores')
  assert.equal(c.source, '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us')
})

test('cgroup v1: quota -1 is unlimited', () => {
  assert.equal(cgroupCpuQuota(root('v1-unlimited')), undefined)
  assert.equal(pick('v1-unlimited', 8).workers, 8)
})

test('hybrid v1 + empty unified mount: the innermost v1 quota (2.5) beats its parent\'s (4), ceil 3', () => {
  const c = pick('hybrid')
  assert.equal(c.workers, 3)
  assert.equal(c.source, '/sys/fs/cgroup/cpu/job/7/cpu.cfs_quota_us')
})

test('a quota above the cores is capped at availableParallelism', () => {
  const c = pick('v1', 2, 2)
  assert.equal(c.workers, 2)
  assert.equal(c.reason, 'cgroup quota 3.0 CPUs of 2 cores, capped at os.availableParallelism() 2')
})

test('missing files (no /proc/self/cgroup, a root with nothing at all): availableParallelism', () => {
  assert.equal(pick('missing', 6).workers, 6)
  assert.equal(defaultWorkerCount({ root: '/nonexistent-nclust-root', available: 5 }).workers, 5)
})

test('this machine: the default never exceeds availableParallelism and is at least 1', () => {
  const c = defaultWorkerCount()
  assert.ok(c.workers >= 1 && c.workers <= availableParallelism(), JSON.stringify(c))
  const o = resolveOptions({ env: {} })
  assert.equal(o.workers, c.workers)
  assert.equal(o.workersFrom, c.reason)
  assert.equal(resolveOptions({ env: { WORKER_COUNT: '3' } }).workersFrom, 'WORKER_COUNT')
  assert.equal(resolveOptions({ env: { WORKER_COUNT: '3' }, workers: 2 }).workersFrom, 'option workers')
})

test('the primary logs how the count was chosen', async (t) => {
  const fixture = fileURLToPath(new URL('./fixtures/app.mjs', import.meta.url))
  const p = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(await freePort()), HOST: '127.0.0.1' } })
  t.after(() => p.cleanup())
  const line = await p.waitForLine((l) => l.role === 'primary' && typeof l.msg === 'string' && l.msg.startsWith('workers: '), 20000, 'the start line')
  assert.equal(line.msg, 'workers: 2 (WORKER_COUNT)')
  assert.equal(line.workersFrom, 'WORKER_COUNT')
  await waitFor(() => p.lines.filter(primaryReady).length >= 2, '2 workers ready', 30000)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})

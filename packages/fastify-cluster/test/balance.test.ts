import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync, readlinkSync } from 'node:fs'
import { kernelBalanceUnsupported, tcpMigrateReq, TCP_MIGRATE_WARNING } from '../src/balance.ts'
import { resolveOptions } from '../src/options.ts'
import { distinct, freePort, spawnNode, waitFor, type Spawned } from '../../../test/helpers/index.ts'
import { fixture, isEvent, primaryReady } from './start-cluster.ts'

const unsupported = kernelBalanceUnsupported()

test('kernel balancing is refused where Node ignores reusePort or the OS does not balance it', () => {
  for (const v of ['v20.20.2', 'v22.11.0', 'v23.0.0', 'v18.20.0']) {
    assert.match(kernelBalanceUnsupported(v, 'linux') ?? '', /needs listen\(\{ reusePort \}\) from Node 22\.12\+ or 23\.1\+/, v)
  }
  for (const v of ['v22.12.0', 'v22.23.5', 'v23.1.0', 'v24.0.0', 'v26.1.0']) assert.equal(kernelBalanceUnsupported(v, 'linux'), undefined, v)
  assert.match(kernelBalanceUnsupported('v24.0.0', 'darwin') ?? '', /needs Linux/)
})

test('NCLUST_BALANCE / balance: validated with a message naming it', () => {
  assert.equal(resolveOptions({ env: {} }).balance, 'primary')
  assert.throws(() => resolveOptions({ env: { NCLUST_BALANCE: 'round-robin' } }), /env NCLUST_BALANCE must be "primary", "kernel" or "sticky", got "round-robin"$/)
  assert.throws(() => resolveOptions({ env: {}, balance: 'fast' as never }), /option balance must be .*, got "fast"$/)
  if (unsupported !== undefined) {
    assert.throws(() => resolveOptions({ env: { NCLUST_BALANCE: 'kernel' } }), /env NCLUST_BALANCE must be "primary" here: kernel balancing needs.*, got "kernel"$/)
  } else {
    assert.equal(resolveOptions({ env: { NCLUST_BALANCE: 'kernel' } }).balance, 'kernel')
    assert.throws(() => resolveOptions({ env: { NCLUST_BALANCE: 'kernel', PORT: '0' } }), /with port 0/)
    assert.throws(() => resolveOptions({ env: { NCLUST_BALANCE: 'kernel', HOST: 'localhost' } }), /with host localhost/)
  }
  assert.equal(tcpMigrateReq('/nonexistent-nclust-root'), 'unknown')
})

/** Inodes of the LISTEN sockets on `port` (this network namespace), and which of `pids` hold each. */
function listeners (port: number, pids: number[]): Map<number, string[]> {
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`
  const inodes = new Set<string>()
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = ''
    try { text = readFileSync(file, 'utf8') } catch { continue }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f[1]?.endsWith(hexPort) === true && f[3] === '0A' && f[9] !== undefined) inodes.add(f[9])
    }
  }
  const held = new Map<number, string[]>()
  for (const pid of pids) {
    const mine: string[] = []
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      let link = ''
      try { link = readlinkSync(`/proc/${pid}/fd/${fd}`) } catch { continue }
      const m = /^socket:\[(\d+)\]$/.exec(link)
      if (m?.[1] !== undefined && inodes.has(m[1])) mine.push(m[1])
    }
    held.set(pid, mine)
  }
  return held
}

async function start (t: { after: (fn: () => Promise<void>) => void }, balance: string): Promise<{ p: Spawned, port: number, workerPids: number[] }> {
  const port = await freePort()
  const p = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', NCLUST_BALANCE: balance } })
  t.after(() => p.cleanup())
  await waitFor(() => p.lines.filter(primaryReady).length >= 2, '2 workers ready', 30000)
  return { p, port, workerPids: p.lines.filter(primaryReady).map((l) => l.workerPid as number) }
}

test('balance primary: the primary holds the one listening socket, workers hold none', async (t) => {
  const { p, port, workerPids } = await start(t, 'primary')
  const held = listeners(port, [p.pid, ...workerPids])
  assert.equal(held.get(p.pid)?.length, 1, `primary holds the listener: ${JSON.stringify([...held])}`)
  for (const pid of workerPids) assert.deepEqual(held.get(pid), [], `worker ${pid} holds no listener`)
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})

test('balance kernel: each worker owns its own listening socket; the primary only keeps copies; both serve; reloads and restarts keep the slot\'s socket', { skip: unsupported }, async (t) => {
  const { p, port, workerPids } = await start(t, 'kernel')
  const startLine = p.lines.find((l) => l.role === 'primary' && typeof l.msg === 'string' && l.msg.startsWith('workers: '))
  assert.equal(startLine?.balance, 'kernel')
  const warned = p.lines.some((l) => l.msg === TCP_MIGRATE_WARNING)
  assert.equal(warned, tcpMigrateReq() === 'off', 'the tcp_migrate_req warning appears exactly when it is off')
  // the primary gets its copies a moment after the worker reports ready
  const held = await waitFor(() => {
    const h = listeners(port, [p.pid, ...workerPids])
    return h.get(p.pid)?.length === 2 && h
  }, 'the primary to hold a copy of both slot sockets')
  const sockets = workerPids.map((pid) => held.get(pid) ?? [])
  for (const s of sockets) assert.equal(s.length, 1, `each worker holds one listener: ${JSON.stringify([...held])}`)
  const inodes = sockets.flat().sort()
  assert.equal(new Set(inodes).size, 2, 'two distinct sockets, one per worker')
  assert.deepEqual([...(held.get(p.pid) ?? [])].sort(), inodes, 'the primary holds the workers\' sockets, not one of its own')
  const seen = await distinct(port, '/', (b: { pid: number }) => b.pid, 2, 400)
  assert.deepEqual([...seen].sort(), [...workerPids].sort(), 'the kernel spreads new connections over both workers')

  // reload: the new generation listens on its slot's socket, so the old worker's close resets nothing
  p.child.kill('SIGHUP')
  await p.waitForLine((l) => isEvent('reload')(l) && l.phase === 'done', 60000, 'the reload')
  const fresh = p.lines.filter(primaryReady).map((l) => l.workerPid as number).filter((pid) => !workerPids.includes(pid))
  assert.equal(fresh.length, 2)
  const after = listeners(port, [p.pid, ...fresh])
  assert.deepEqual(fresh.flatMap((pid) => after.get(pid) ?? []).sort(), inodes, 'the new generation holds the same two sockets')

  // a crash: the replacement inherits the socket too (connections hashed to it wait in its queue)
  process.kill(fresh[0]!, 'SIGKILL')
  const replaced = await p.waitForLine((l) => primaryReady(l) && !workerPids.includes(l.workerPid as number) && !fresh.includes(l.workerPid as number), 30000, 'the replacement')
  const last = listeners(port, [replaced.workerPid as number])
  assert.equal(last.get(replaced.workerPid as number)?.length, 1)
  assert.ok(inodes.includes(last.get(replaced.workerPid as number)![0]!), 'the replacement listens on its slot\'s socket')
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30000)).code, 0)
})

test('balance kernel where unsupported: exit 1 before any fork, one line naming NCLUST_BALANCE', { skip: unsupported === undefined ? 'supported on this Node' : false }, async (t) => {
  const p = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(await freePort()), NCLUST_BALANCE: 'kernel' } })
  t.after(() => p.cleanup())
  assert.equal((await p.waitForExit(15000)).code, 1)
  assert.match(p.stderr(), /^nclust: NCLUST_CLUSTER_INVALID_OPTION: env NCLUST_BALANCE must be "primary" here: kernel balancing needs listen\(\{ reusePort \}\) from Node 22\.12\+ or 23\.1\+, this is Node v[\d.]+, got "kernel"/)
  assert.equal(p.stderr().trim().split('\n').length, 1)
})

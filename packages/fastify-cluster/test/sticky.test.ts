import { test } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'node:http'
import { createServer, type AddressInfo } from 'node:net'
import { addressHash, pickSlot } from '../src/primary/sticky.ts'
import { isAlive, spawnNode, waitFor } from '../../../test/helpers/index.ts'
import { fixture, primaryReady, startCluster } from './start-cluster.ts'

/** GET `path` on a new connection from `localAddress` (a 127.0.0.x address): the worker that answered. */
async function from (port: number, localAddress: string, path = '/'): Promise<{ pid: number, generation: number, workerId: number }> {
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, localAddress, agent: false, headers: { connection: 'close' }, timeout: 20_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => {
        if (res.statusCode !== 200) { reject(new Error(`status ${String(res.statusCode)}: ${body}`)); return }
        resolve(JSON.parse(body) as { pid: number, generation: number, workerId: number })
      })
    })
    req.on('error', reject)
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.end()
  })
}

const addresses = Array.from({ length: 12 }, (_, i) => `127.0.0.${i + 2}`)

test('rendezvous hashing: stable, spread, and a slot going away moves only its own addresses', () => {
  const hashes = Array.from({ length: 3000 }, (_, i) => addressHash(`10.${i >> 8}.${i & 255}.7`))
  const four = hashes.map((h) => pickSlot(h, [0, 1, 2, 3]))
  assert.deepEqual(four, hashes.map((h) => pickSlot(h, [3, 2, 1, 0])), 'the order of the slots does not matter')
  for (const slot of [0, 1, 2, 3]) {
    const share = four.filter((s) => s === slot).length / hashes.length
    assert.ok(share > 0.2 && share < 0.3, `slot ${slot} gets ${share}`)
  }
  const three = hashes.map((h) => pickSlot(h, [0, 1, 3]))
  for (let i = 0; i < hashes.length; i++) {
    if (four[i] !== 2) assert.equal(three[i], four[i], 'an address of another slot never moves')
  }
  assert.equal(pickSlot(1, []), undefined)
})

test('balance sticky: every connection from one address reaches one worker, addresses spread over both, and a reload keeps them sticky with zero failures', async (t) => {
  const { p, port } = await startCluster(t, { NCLUST_BALANCE: 'sticky' })
  const oldPids = p.lines.filter(primaryReady).map((l) => l.workerPid as number)
  const before = new Map<string, Set<number>>()
  for (let round = 0; round < 4; round++) {
    for (const a of addresses) {
      const r = await from(port, a)
      if (!before.has(a)) before.set(a, new Set())
      before.get(a)!.add(r.pid)
    }
  }
  for (const [a, pids] of before) assert.equal(pids.size, 1, `${a} reached ${[...pids].join(', ')}`)
  assert.equal(new Set([...before.values()].map((s) => [...s][0])).size, 2, 'the addresses spread over both workers')

  // Through a reload: requests keep flowing from every address, none fails.
  p.child.kill('SIGHUP')
  let failures = 0
  let during = 0
  const state = { reloaded: false }
  const done = p.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('rolling reload done'), 60_000, 'the reload')
    .finally(() => { state.reloaded = true })
  while (!state.reloaded) {
    for (const a of addresses) {
      try { await from(port, a); during++ } catch { failures++ }
    }
  }
  await done
  for (const pid of oldPids) await waitFor(() => !isAlive(pid), `old worker ${pid} gone`, 30_000)
  const after = new Map<string, Set<number>>()
  for (let round = 0; round < 3; round++) {
    for (const a of addresses) {
      const r = await from(port, a)
      assert.equal(r.generation, 1)
      if (!after.has(a)) after.set(a, new Set())
      after.get(a)!.add(r.pid)
    }
  }
  t.diagnostic(`sticky reload: ${during} requests during the reload, ${failures} failed`)
  assert.equal(failures, 0)
  for (const [a, pids] of after) assert.equal(pids.size, 1, `${a} reached ${[...pids].join(', ')} after the reload`)
  // the slot is the unit: addresses that shared a worker before share its successor now
  const slotOf = (m: Map<string, Set<number>>): string[] => addresses.map((a) => String(addresses.findIndex((b) => [...m.get(b)!][0] === [...m.get(a)!][0])))
  assert.deepEqual(slotOf(after), slotOf(before))
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30_000)).code, 0)
})

test('balance sticky on a port already taken: the primary says so in one line and exits 1', async (t) => {
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.after(() => { blocker.close() })
  const port = (blocker.address() as AddressInfo).port
  const p = spawnNode(fixture, { env: { WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', NCLUST_BALANCE: 'sticky' } })
  t.after(() => p.cleanup())
  const exit = await p.waitForExit(60_000)
  assert.equal(exit.code, 1)
  assert.ok(p.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith(`balance sticky: the primary cannot listen on 127.0.0.1:${port}: listen EADDRINUSE`)), p.output())
})

test('balance sticky: the addresses of a crashed worker go to the live one meanwhile, and back to its slot once replaced', async (t) => {
  const { p, port } = await startCluster(t, { NCLUST_BALANCE: 'sticky', FIXTURE_BACKOFF: JSON.stringify({ initialDelay: 2000 }) }) // the replacement waits 2 s: time to look
  const home = new Map<string, { pid: number, workerId: number }>()
  for (const a of addresses) home.set(a, await from(port, a))
  const victim = home.get(addresses[0]!)!
  const moved = addresses.filter((a) => home.get(a)!.workerId === victim.workerId)
  const stayed = addresses.filter((a) => home.get(a)!.workerId !== victim.workerId)
  assert.ok(stayed.length > 0)
  await from(port, addresses[0]!, '/crash') // answered, then the worker throws
  await waitFor(() => p.lines.some((l) => l.msg === 'worker exited unexpectedly' && l.workerPid === victim.pid), 'the primary saw the crash', 20_000)
  for (const a of addresses) {
    const r = await from(port, a) // meanwhile every address is served, by the live slot
    assert.notEqual(r.workerId, victim.workerId)
  }
  for (const a of stayed) assert.equal((await from(port, a)).pid, home.get(a)!.pid, 'the other addresses never moved')
  await waitFor(() => p.lines.filter(primaryReady).length >= 3, 'the replacement ready', 30_000)
  for (const a of moved) {
    const r = await from(port, a)
    assert.equal(r.workerId, victim.workerId, `${a} is back on its slot`)
    assert.notEqual(r.pid, victim.pid)
  }
  p.child.kill('SIGTERM')
  assert.equal((await p.waitForExit(30_000)).code, 0)
})

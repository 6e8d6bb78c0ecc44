// Property-based tests of the pure slot machine (src/primary/transitions.ts) with fast-check:
// random sequences of events (readies, crashes, drains, timers, signals, reloads, recycles,
// scales) through a simulated world (machine-world.ts), no processes and no sleeps. Invariants,
// checked after every command:
//   - never two current workers in one slot; a slot's current worker is a live, non-candidate one;
//   - a slot is never left empty while not shutting down (unless a restart is scheduled or a
//     candidate is on its way);
//   - no fork once the shutdown began;
//   - a reload or recycle whose new worker fails leaves the old one serving (current, not asked);
// and at the end of each sequence:
//   - a shutdown always completes once every process has exited, exactly once;
//   - the kill timer always ends it (exit 1);
//   - the exit code is 0 exactly when every worker drained (exited 0 after being asked, or a
//     still-starting one died of our SIGTERM) after a signal or close().
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { World, type Command, type ExitKind } from './machine-world.ts'
import { step, type MachineEvent } from '../src/primary/transitions.ts'

const NUM_RUNS = Number(process.env.NCLUST_PROPERTY_RUNS ?? 10_000)

const exitKind = fc.constantFrom<ExitKind>('clean', 'crash', 'sigkill', 'sigterm')
const n = fc.nat(7)
const command: fc.Arbitrary<Command> = fc.oneof(
  { arbitrary: fc.record({ type: fc.constant('ready' as const), n }), weight: 6 },
  { arbitrary: fc.record({ type: fc.constant('exit' as const), n, kind: exitKind }), weight: 3 },
  { arbitrary: fc.record({ type: fc.constant('obey' as const), n }), weight: 4 },
  { arbitrary: fc.record({ type: fc.constant('start-timeout' as const), n }), weight: 1 },
  { arbitrary: fc.record({ type: fc.constant('restart-due' as const), n }), weight: 4 },
  { arbitrary: fc.constant({ type: 'kill-timer' as const }), weight: 1 },
  { arbitrary: fc.record({ type: fc.constant('hung' as const), n }), weight: 1 },
  { arbitrary: fc.record({ type: fc.constant('heartbeat' as const), n }), weight: 1 },
  { arbitrary: fc.record({ type: fc.constant('fatal' as const), n }), weight: 1 },
  { arbitrary: fc.record({ type: fc.constant('signal' as const), signal: fc.constantFrom('SIGTERM', 'SIGINT', 'SIGHUP', 'SIGTTIN', 'SIGTTOU') }), weight: 2 },
  { arbitrary: fc.constant({ type: 'close' as const }), weight: 1 },
  { arbitrary: fc.constant({ type: 'primary-error' as const }), weight: 1 },
  { arbitrary: fc.constant({ type: 'reload' as const }), weight: 3 },
  { arbitrary: fc.record({ type: fc.constant('recycle' as const), n }), weight: 2 },
  { arbitrary: fc.record({ type: fc.constant('scale' as const), n: fc.integer({ min: 1, max: 4 }) }), weight: 2 },
  { arbitrary: fc.record({ type: fc.constant('tick' as const), ms: fc.integer({ min: 1, max: 6000 }) }), weight: 3 }
)
const workers = fc.integer({ min: 1, max: 3 })
const commands = fc.array(command, { maxLength: 80 })

/** Shut down (SIGTERM, unless a shutdown already runs) and let every process exit as `exits` says. */
function drain (w: World, exits: ExitKind[], killTimer: boolean): void {
  if (w.state.shutdown === undefined) w.run({ type: 'signal', signal: 'SIGTERM' })
  if (killTimer) w.run({ type: 'kill-timer' })
  for (let i = 0; w.live.size > 0; i++) {
    if (i > 1000) throw new Error('processes never left')
    const [id] = w.live.keys()
    w.exit(id as number, killTimer ? 'sigkill' : exits[i % exits.length] ?? 'clean')
    w.check()
  }
  assert.equal(w.finishes.length, 1, `the shutdown finished ${w.finishes.length} times`)
  w.checkExitCode()
}

test(`random event sequences keep every invariant, and the shutdown always completes (${NUM_RUNS} runs)`, () => {
  fc.assert(fc.property(workers, commands, fc.array(exitKind, { minLength: 1, maxLength: 4 }), (k, cmds, exits) => {
    const w = new World(k)
    for (const c of cmds) w.run(c)
    drain(w, exits, false)
  }), { numRuns: NUM_RUNS })
})

test(`the kill timer always ends a shutdown, with exit 1 when anyone was left (${NUM_RUNS} runs)`, () => {
  fc.assert(fc.property(workers, commands, (k, cmds) => {
    const w = new World(k)
    for (const c of cmds) w.run(c)
    const pending = w.finishes.length === 0
    drain(w, [], true)
    if (pending && w.unclean.includes('the kill timer fired')) assert.equal(w.finishes[0]?.code, 1)
  }), { numRuns: NUM_RUNS })
})

test(`a clean drain after SIGTERM exits 0 (${NUM_RUNS} runs)`, () => {
  // Only readies, heartbeats, reloads and scales before the signal: no fault anywhere.
  const calm = fc.array(command.filter((c) => ['ready', 'heartbeat', 'reload', 'scale', 'tick', 'obey'].includes(c.type)), { maxLength: 40 })
  fc.assert(fc.property(workers, calm, (k, cmds) => {
    const w = new World(k)
    for (const c of cmds) w.run(c)
    drain(w, ['clean'], false)
    assert.equal(w.finishes[0]?.code, 0)
  }), { numRuns: NUM_RUNS })
})

// ── named examples: the interleavings that broke (or would break) the machine ───────────────

test('issue 22: a reload candidate that exits last during SIGTERM still finishes the shutdown', () => {
  const w = new World(2)
  w.run({ type: 'ready', n: 0 })
  w.run({ type: 'ready', n: 0 })
  w.run({ type: 'signal', signal: 'SIGHUP' }) // the candidate of slot 0 starts (slowly)
  w.run({ type: 'signal', signal: 'SIGTERM' })
  const candidate = [...w.state.procs.values()].find((p) => p.candidate)
  assert.ok(candidate !== undefined)
  for (const id of [...w.live.keys()].filter((i) => i !== candidate.id)) w.exit(id, 'clean')
  assert.equal(w.finishes.length, 0)
  w.exit(candidate.id, 'sigterm')
  assert.deepEqual(w.finishes, [{ code: 0 }])
})

test('an old worker that crashes during a reload whose candidate then fails: the slot is forked again (refill)', () => {
  const w = new World(1)
  w.run({ type: 'ready', n: 0 })
  w.run({ type: 'reload' })
  const [old, candidate] = [...w.live.keys()]
  w.exit(old as number, 'crash') // restart scheduled; the candidate is on its way
  w.run({ type: 'restart-due', n: 0 }) // fires, sees the candidate, forks nothing
  assert.equal(w.state.slots[0]?.restartPending, false)
  w.exit(candidate as number, 'crash') // the candidate fails: the slot must not stay empty
  assert.equal(w.live.size, 1, 'a new worker was forked into the slot')
  assert.ok(w.state.slots[0]?.current !== undefined)
})

test('a start failure during a reload does not count against the start verdict of a slot that served', () => {
  const w = new World(1)
  w.run({ type: 'ready', n: 0 })
  for (let i = 0; i < 5; i++) {
    w.run({ type: 'reload' })
    const candidate = [...w.state.procs.values()].find((p) => p.candidate)
    assert.ok(candidate !== undefined)
    w.exit(candidate.id, 'crash')
  }
  assert.equal(w.state.shutdown, undefined, 'five failed reloads: the old worker serves on')
  assert.equal(w.live.size, 1)
})

// ── issue 26 §1: a reload asked while one runs ────────────────────────────────────────────────

/** Every `reload-answer` effect of one event. */
function answer (w: World, event: MachineEvent): Array<{ pass: number } | { refused: string }> {
  const { effects } = step(w.state, event)
  w.send(event)
  return effects.flatMap((fx) => fx.type === 'reload-answer' ? [('refused' in fx ? { refused: fx.refused } : { pass: fx.pass })] : [])
}

test('a reload asked while one runs queues exactly one more full pass, whatever the source; further asks join it', () => {
  const w = new World(2)
  w.run({ type: 'ready', n: 0 })
  w.run({ type: 'ready', n: 0 })
  assert.deepEqual(answer(w, { type: 'reload-request' }), [{ pass: 1 }])
  w.settleReload()
  assert.deepEqual(w.passesOrdered, [1])
  // The same answer from the handle, SIGHUP and a second handle call: one pass queued, pass 2.
  assert.deepEqual(answer(w, { type: 'signal', signal: 'SIGHUP', desired: 2 }), [{ pass: 2 }])
  assert.deepEqual(answer(w, { type: 'reload-request', source: 'nclust reload' }), [{ pass: 2 }])
  assert.deepEqual(answer(w, { type: 'reload-request', source: 'watch' }), [{ pass: 2 }])
  assert.deepEqual(w.passesOrdered, [1], 'nothing starts while pass 1 runs')
  assert.deepEqual(w.state.reload, { pass: 1, running: true, queued: true })
  // Pass 1 runs to its end (every slot replaced), then pass 2 starts: a full pass of its own.
  while (w.passesDone.length < 1) { w.run({ type: 'ready', n: 0 }); w.run({ type: 'obey', n: 0 }) }
  assert.deepEqual(w.passesOrdered, [1, 2])
  while (w.passesDone.length < 2) { w.run({ type: 'ready', n: 0 }); w.run({ type: 'obey', n: 0 }) }
  assert.deepEqual(w.state.slots.map((s) => s.generation), [2, 2], 'generation 0, then 1 (pass 1), then 2: pass 2 forked every slot once more')
  assert.deepEqual(w.state.reload, { pass: 2, running: false, queued: false })
  assert.deepEqual(w.passesOrdered, [1, 2], 'three asks during pass 1 made one pass, not three')
})

test('a reload asked during the shutdown is refused, and a queued pass is cancelled by it', () => {
  const w = new World(2)
  w.run({ type: 'ready', n: 0 })
  w.run({ type: 'ready', n: 0 })
  answer(w, { type: 'reload-request' })
  w.settleReload()
  answer(w, { type: 'reload-request' })
  const { effects } = step(w.state, { type: 'signal', signal: 'SIGTERM', desired: 2 })
  assert.ok(effects.some((fx) => fx.type === 'reload-cancelled' && fx.pass === 2), 'the queued pass 2 is cancelled')
  w.send({ type: 'signal', signal: 'SIGTERM', desired: 2 })
  assert.deepEqual(answer(w, { type: 'signal', signal: 'SIGHUP', desired: 2 }), [{ refused: 'shutting down' }])
  assert.deepEqual(answer(w, { type: 'reload-request' }), [{ refused: 'shutting down' }])
  assert.equal(w.state.reload.queued, false)
})

test('a worker\'s fatal message and stack are kept capped (4 KiB, 16 KiB)', () => {
  const w = new World(1)
  const [id] = [...w.live.keys()]
  w.send({ type: 'fatal', id: id as number, reason: 'uncaughtException', message: 'x'.repeat(1_000_000), stack: 'y'.repeat(1_000_000) })
  const p = w.state.procs.get(id as number)
  assert.equal(p?.fatal?.length, 4096)
  assert.equal(p?.fatalStack?.length, 16384)
})

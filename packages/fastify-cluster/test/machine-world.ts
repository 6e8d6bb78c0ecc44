/**
 * A simulated world around the pure slot machine (src/primary/transitions.ts): processes that
 * start, crash, drain and die when told, the timers as a set of armed ones, and a small model of
 * the replacer (replace.ts: surge-first reload and recycle, scale up and down, one at a time).
 * No clock, no processes, no sleeps: every outcome comes from the commands the test feeds in.
 * After each command it checks the invariants and throws on the first one broken.
 */
import { initialState, step, type Effect, type MachineConfig, type MachineEvent, type MachineState, type Signal } from '../src/primary/transitions.ts'

export const config: MachineConfig = {
  shutdownTimeout: 5000,
  startTimeout: 3000,
  startRetries: 2,
  restartBackoff: { initialDelay: 100, maxDelay: 1000, factor: 2, resetAfter: 5000 },
  crashLoop: { maxFailures: 4, window: 10_000 },
  handleSignals: true
}

export type ExitKind = 'clean' | 'crash' | 'sigkill' | 'sigterm'
export type Command =
  | { type: 'ready', n: number }
  | { type: 'exit', n: number, kind: ExitKind }
  /** A process the primary asked to leave (or SIGKILLed) goes, the way it was told to. */
  | { type: 'obey', n: number }
  | { type: 'start-timeout', n: number }
  | { type: 'restart-due', n: number }
  | { type: 'kill-timer' }
  | { type: 'hung', n: number }
  | { type: 'heartbeat', n: number }
  | { type: 'fatal', n: number }
  | { type: 'signal', signal: Signal }
  | { type: 'close' }
  | { type: 'primary-error' }
  | { type: 'reload' }
  | { type: 'recycle', n: number }
  | { type: 'scale', n: number }
  | { type: 'tick', ms: number }

interface Live { slot: number, asked: boolean, killed: boolean, everReady: boolean }
type Op =
  | { type: 'replace', slots: number[], candidate: number | undefined, old: number | undefined, why: 'reload' | 'recycle' }
  | { type: 'scale-up', slots: number[], candidates: Map<number, number>, failed: boolean }
  | { type: 'scale-down', slots: number[] }

export class World {
  state: MachineState
  at = 1_000_000
  nextId = 1
  live = new Map<number, Live>()
  startTimers = new Set<number>()
  restartTimers = new Set<number>()
  killTimer = false
  op: Op | undefined
  finishes: Array<{ code: number }> = []
  /** Shutdown bookkeeping for the exit-code invariant. */
  shutdownAt: number | undefined
  unclean: string[] = []
  failed = false
  log: string[] = []
  /** Reload passes the machine ordered, in order; the replacer's model runs each once nothing else runs. */
  passesOrdered: number[] = []
  passesDone: number[] = []
  private passRunning: number | undefined

  constructor (workers: number) {
    this.state = initialState(config, workers)
    for (const slot of this.state.slots) this.send({ type: 'fork', slot: slot.key, candidate: false })
  }

  /** One event into the machine, its effects applied, then the invariants. */
  send (event: MachineEvent): void {
    const before = this.state
    const { state, effects } = step(before, event)
    this.state = state
    this.log.push(event.type + (('id' in event) ? `#${event.id}` : ''))
    let shutdownSeen = before.shutdown !== undefined
    for (const fx of effects) {
      if (fx.type === 'emit' && fx.name === 'shutdown') shutdownSeen = true
      if (fx.type === 'fork' && shutdownSeen) throw new Error(`fork of slot ${fx.slotId} after the shutdown began`)
    }
    if (before.shutdown === undefined && state.shutdown !== undefined) this.shutdownAt = this.log.length
    for (const fx of effects) this.apply(fx)
  }

  private apply (fx: Effect): void {
    switch (fx.type) {
      case 'fork': {
        const id = this.nextId++
        this.live.set(id, { slot: fx.slot, asked: false, killed: false, everReady: false })
        this.send({ type: 'forked', slot: fx.slot, id, pid: 10_000 + id, candidate: fx.candidate, at: this.at })
        if (fx.candidate) this.onCandidateForked(fx.slot, id)
        return
      }
      case 'ask': { const p = this.live.get(fx.id); if (p !== undefined) p.asked = true; return }
      case 'kill': {
        const p = this.live.get(fx.id)
        if (p !== undefined) p.killed = true
        return
      }
      case 'start-timer': this.startTimers.add(fx.id); return
      case 'clear-start-timer': this.startTimers.delete(fx.id); return
      case 'restart-timer': this.restartTimers.add(fx.slot); return
      case 'clear-restart-timer': this.restartTimers.delete(fx.slot); return
      case 'kill-timer': this.killTimer = true; return
      case 'clear-kill-timer': this.killTimer = false; return
      case 'finish': this.finishes.push({ code: fx.code }); return
      case 'reload': this.passesOrdered.push(fx.pass); return
      case 'scale': this.startScale(fx.n); return
      case 'emit':
        if (fx.name === 'worker-ready') this.onReady(fx.payload.pid - 10_000)
    }
  }

  // ── the replacer's model ─────────────────────────────────────────────────────────────────
  startOp (why: 'reload' | 'recycle', slotKey?: number): void {
    if (this.op !== undefined || this.state.shutdown !== undefined) return
    const slots = slotKey !== undefined ? [slotKey] : this.state.slots.filter((s) => !s.removed).map((s) => s.key)
    this.op = { type: 'replace', slots, candidate: undefined, old: undefined, why }
    this.nextReplace()
  }

  private nextReplace (): void {
    const op = this.op
    if (op?.type !== 'replace') return
    const key = op.slots.shift()
    const slot = this.state.slots.find((s) => s.key === key)
    if (slot === undefined || this.state.shutdown !== undefined) { this.op = undefined; return }
    op.old = slot.current
    op.candidate = undefined
    if (op.why === 'recycle') this.send({ type: 'count-restart', slot: slot.key })
    this.send({ type: 'fork', slot: slot.key, candidate: true })
    if (op.candidate === undefined) this.op = undefined // refused: the shutdown began
  }

  startScale (n: number): void {
    if (this.op !== undefined || this.state.shutdown !== undefined) return
    const live = this.state.slots
    if (n > live.length) {
      const op: Op = { type: 'scale-up', slots: [], candidates: new Map(), failed: false }
      this.op = op
      for (let i = live.length; i < n; i++) {
        this.send({ type: 'add-slot' })
        op.slots.push(this.state.slots[this.state.slots.length - 1]!.key)
      }
      for (const key of [...op.slots]) this.send({ type: 'fork', slot: key, candidate: true })
      this.settleScaleUp()
    } else if (n < live.length && n >= 1) {
      const slots = live.slice(n).map((s) => s.key)
      this.op = { type: 'scale-down', slots }
      for (const key of slots) this.send({ type: 'retire-slot', slot: key })
      for (const [id, p] of this.live) if (slots.includes(p.slot)) this.send({ type: 'ask', id, reason: 'scale' })
      this.settleScaleDown()
    }
  }

  private onCandidateForked (slot: number, id: number): void {
    if (this.op?.type === 'replace') this.op.candidate = id
    if (this.op?.type === 'scale-up') this.op.candidates.set(slot, id)
  }

  private onReady (id: number): void {
    const p = this.live.get(id)
    if (p !== undefined) p.everReady = true
    const op = this.op
    if (op?.type === 'replace' && op.candidate === id) {
      const old = op.old
      if (old !== undefined && this.live.has(old)) this.send({ type: 'ask', id: old, reason: op.why, exitAs: op.why === 'recycle' ? 'recycle' : 'requested' })
      op.candidate = undefined
      if (old === undefined || !this.live.has(old)) this.nextReplace()
    }
    if (op?.type === 'scale-up') this.settleScaleUp()
  }

  /** A process left: what the replacer's awaits would see. */
  private onGone (id: number): void {
    const op = this.op
    if (op?.type === 'replace') {
      if (op.candidate === id) {
        // The candidate failed: the old worker (if still there) serves on, the op stops.
        const old = op.old
        const slot = this.state.slots.find((s) => s.key === this.slotOfCandidate(id))
        if (old !== undefined && this.live.has(old) && slot !== undefined && this.state.shutdown === undefined) {
          if (slot.current !== old) throw new Error(`failed ${op.why}: slot ${slot.id}'s old worker ${old} is no longer its current worker`)
          if (this.state.procs.get(old)?.requested === true) throw new Error(`failed ${op.why}: slot ${slot.id}'s old worker ${old} was asked to leave`)
        }
        if (slot !== undefined) this.send({ type: 'refill', slot: slot.key })
        this.op = undefined
      } else if (op.candidate === undefined && op.old === id) this.nextReplace()
    }
    if (op?.type === 'scale-up') this.settleScaleUp()
    if (op?.type === 'scale-down') this.settleScaleDown()
  }

  private candidateSlots = new Map<number, number>()
  private slotOfCandidate (id: number): number | undefined { return this.candidateSlots.get(id) }

  private settleScaleUp (): void {
    const op = this.op
    if (op?.type !== 'scale-up') return
    const outcomes = op.slots.map((key) => {
      const id = op.candidates.get(key)
      if (id === undefined) return 'failed'
      const p = this.state.procs.get(id)
      if (p === undefined) return 'failed'
      return p.state === 'starting' ? 'pending' : 'ready'
    })
    if (outcomes.includes('pending')) return
    const first = outcomes.indexOf('failed')
    if (first >= 0) {
      for (const key of op.slots.slice(first).reverse()) {
        this.send({ type: 'retire-slot', slot: key })
        for (const [id, p] of this.live) if (p.slot === key) this.send({ type: 'ask', id, reason: 'scale' })
      }
      if ([...this.live.values()].some((p) => op.slots.slice(first).includes(p.slot))) return // wait for them to go
      for (const key of op.slots.slice(first).reverse()) this.send({ type: 'remove-slot', slot: key })
    }
    this.op = undefined
  }

  private settleScaleDown (): void {
    const op = this.op
    if (op?.type !== 'scale-down') return
    if ([...this.live.values()].some((p) => op.slots.includes(p.slot))) return
    for (const key of op.slots) this.send({ type: 'remove-slot', slot: key })
    this.op = undefined
  }

  // ── commands ─────────────────────────────────────────────────────────────────────────────
  private pick<T> (list: T[], n: number): T | undefined { return list.length === 0 ? undefined : list[n % list.length] }

  exit (id: number, kind: ExitKind): void {
    const p = this.live.get(id)
    if (p === undefined) return
    const code = kind === 'clean' ? 0 : kind === 'crash' ? 1 : null
    const signal = kind === 'sigkill' ? 'SIGKILL' : kind === 'sigterm' ? 'SIGTERM' : null
    if (this.state.shutdown !== undefined) {
      const termedWhileStarting = p.asked && !p.everReady && signal === 'SIGTERM'
      if (!(code === 0 && signal === null) && !termedWhileStarting) this.unclean.push(`worker ${id} exited ${kind}`)
      if (!p.asked) this.unclean.push(`worker ${id} left unasked`)
    }
    const candidate = this.state.procs.get(id)?.candidate === true
    if (candidate) this.candidateSlots.set(id, p.slot)
    this.live.delete(id)
    this.startTimers.delete(id)
    this.send({ type: 'exit', id, code, signal, at: this.at })
    this.onGone(id)
  }

  run (c: Command): void {
    const ids = [...this.live.keys()]
    switch (c.type) {
      case 'ready': {
        const id = this.pick(ids.filter((i) => this.state.procs.get(i)?.state === 'starting'), c.n)
        if (id !== undefined) this.send({ type: 'ready', id, at: this.at })
        break
      }
      case 'exit': { const id = this.pick(ids, c.n); if (id !== undefined) this.exit(id, c.kind); break }
      case 'obey': {
        const id = this.pick(ids.filter((i) => this.live.get(i)!.asked || this.live.get(i)!.killed), c.n)
        if (id === undefined) break
        const p = this.live.get(id)!
        this.exit(id, p.killed ? 'sigkill' : p.everReady ? 'clean' : 'sigterm')
        break
      }
      case 'start-timeout': { const id = this.pick([...this.startTimers], c.n); if (id !== undefined) { this.startTimers.delete(id); this.send({ type: 'start-timeout', id }) } break }
      case 'restart-due': {
        const key = this.pick([...this.restartTimers], c.n)
        if (key !== undefined) { this.restartTimers.delete(key); this.send({ type: 'restart-due', slot: key, at: this.at }) }
        break
      }
      case 'kill-timer':
        if (!this.killTimer) break
        this.killTimer = false
        if (this.live.size > 0) this.unclean.push('the kill timer fired')
        this.send({ type: 'kill-timer' })
        break
      case 'hung': {
        const id = this.pick(ids.filter((i) => this.state.procs.get(i)?.state === 'ready'), c.n)
        if (id !== undefined) { this.send({ type: 'exit-as', id, exitAs: 'hung' }); this.live.get(id)!.killed = true }
        break
      }
      case 'heartbeat': { const id = this.pick(ids, c.n); if (id !== undefined) this.send({ type: 'heartbeat', id, at: this.at, requests: c.n, rss: 1 }); break }
      case 'fatal': { const id = this.pick(ids, c.n); if (id !== undefined) this.send({ type: 'fatal', id, reason: 'uncaughtException', message: 'boom' }); break }
      case 'signal':
        if ((c.signal === 'SIGTERM' || c.signal === 'SIGINT') && this.state.shutdown !== undefined && this.live.size > 0) this.unclean.push('a second signal')
        this.send({ type: 'signal', signal: c.signal, desired: this.state.slots.length })
        break
      case 'close': this.send({ type: 'shutdown', reason: 'close' }); break
      case 'primary-error': if (this.finishes.length === 0) this.failed = true; this.send({ type: 'fail' }); this.send({ type: 'shutdown', reason: 'fatal', exit: true }); break
      case 'reload': this.send({ type: 'reload-request' }); break
      case 'recycle': {
        const slot = this.pick(this.state.slots.filter((s) => s.current !== undefined && this.state.procs.get(s.current)?.state === 'ready'), c.n)
        if (slot !== undefined) this.startOp('recycle', slot.key)
        break
      }
      case 'scale': this.startScale(c.n); break
      case 'tick': this.at += c.ms; break
    }
    this.settleReload()
    this.check()
  }

  /** The replacer's serial queue: a pass the machine ordered runs once no other operation does; its end is reported. */
  settleReload (): void {
    for (let i = 0; i < 100; i++) {
      if (this.op !== undefined) return
      if (this.passRunning !== undefined) {
        this.passesDone.push(this.passRunning)
        this.passRunning = undefined
        this.send({ type: 'reload-done' })
        continue
      }
      const next = this.passesOrdered.find((p) => !this.passesDone.includes(p))
      if (next === undefined) return
      this.passRunning = next
      this.startOp('reload')
    }
    throw new Error('reload passes never settle')
  }

  // ── invariants ───────────────────────────────────────────────────────────────────────────
  check (): void {
    const s = this.state
    if (this.finishes.length > 1) throw new Error('the shutdown finished twice')
    if (s.reload.queued && !s.reload.running) throw new Error('a reload pass is queued behind none')
    if (s.reload.queued && s.shutdown !== undefined) throw new Error('a reload pass is still queued during the shutdown')
    if (s.reload.running !== (this.passRunning !== undefined || this.passesOrdered.some((p) => !this.passesDone.includes(p)))) {
      throw new Error(`the machine says a reload pass runs: ${String(s.reload.running)}, the replacer disagrees`)
    }
    for (const id of s.procs.keys()) if (!this.live.has(id)) throw new Error(`the machine tracks ${id}, which is gone`)
    for (const id of this.live.keys()) if (!s.procs.has(id)) throw new Error(`process ${id} is alive and untracked`)
    for (const slot of s.slots) {
      const serving = [...s.procs.values()].filter((p) => p.slot === slot.key && !p.candidate && !p.requested)
      if (serving.length > 1) throw new Error(`slot ${slot.id} has ${serving.length} current workers: ${serving.map((p) => p.id).join(', ')}`)
      if (slot.current !== undefined) {
        const p = s.procs.get(slot.current)
        if (p === undefined || p.slot !== slot.key || p.candidate) throw new Error(`slot ${slot.id}'s current worker ${slot.current} is not a live worker of it`)
      }
      if (slot.restartPending !== this.restartTimers.has(slot.key)) throw new Error(`slot ${slot.id}: restart pending ${String(slot.restartPending)}, timer armed ${String(!slot.restartPending)}`)
      if (s.shutdown !== undefined || slot.removed || slot.current !== undefined || slot.restartPending) continue
      // A new slot of a running scale-up whose candidate failed: the scale-up drops it once the others settle.
      if (this.op?.type === 'scale-up' && this.op.slots.includes(slot.key) && !slot.everReady) continue
      const candidate = [...s.procs.values()].some((p) => p.slot === slot.key && p.candidate)
      if (!candidate) throw new Error(`slot ${slot.id} is empty, with no restart scheduled, while not shutting down`)
    }
  }

  /** The exit code the machine gave against what the world saw. */
  checkExitCode (): void {
    const f = this.finishes[0]
    if (f === undefined) return
    const reason = this.state.shutdown
    const clean = this.unclean.length === 0 && !this.failed && (reason === 'signal' || reason === 'close')
    if (f.code === 0 && !clean) throw new Error(`exit 0 after ${reason ?? '?'} shutdown with ${this.unclean.join('; ') || (this.failed ? 'a primary error' : 'no drain')}`)
    if (f.code !== 0 && clean) throw new Error(`exit ${f.code} although every worker drained after a ${reason ?? '?'} shutdown`)
  }
}

// From outside, over real sockets: a metrics server keeps at most `maxConnections` sockets open
// (one more is closed without an answer, and serving resumes once one goes), and closes a client that
// sends its request headers too slowly within `headersTimeout` (plus the 1 s check interval).
import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { waitFor } from './index.ts'

export interface ServerLimits { maxConnections: number, headersTimeout: number }

const open = async (port: number): Promise<Socket> => await new Promise((resolve, reject) => {
  const s = connect(port, '127.0.0.1', () => resolve(s))
  s.once('error', reject)
})

/** Resolves when `s` closes: whether any byte came back, and after how many ms. */
const closed = async (s: Socket, since = Date.now()): Promise<{ answered: boolean, ms: number }> => await new Promise((resolve) => {
  let answered = false
  s.on('data', () => { answered = true })
  s.on('error', () => {})
  s.once('close', () => resolve({ answered, ms: Date.now() - since }))
})

/** One GET over a new connection: the status line's code, or 0 when the connection closed without one. */
async function status (port: number, path: string): Promise<number> {
  const s = await open(port).catch(() => undefined)
  if (s === undefined) return 0
  let text = ''
  s.setEncoding('utf8').on('data', (d: string) => { text += d; if (text.includes('\r\n')) s.destroy() })
  const done = closed(s)
  s.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
  await done
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)
}

export async function assertServerLimits (port: number, path: string, limits: ServerLimits): Promise<{ slowClosedAfterMs: number }> {
  const held: Socket[] = []
  try {
    assert.equal(await status(port, path), 200, 'serves before the test')
    for (let i = 0; i < limits.maxConnections; i++) held.push(await open(port))
    // The server accepts in order: once these are open, one more is over the cap and closed unanswered.
    const extra = await open(port)
    const extraClosed = closed(extra)
    extra.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`)
    const r = await Promise.race([extraClosed, new Promise<undefined>((resolve) => setTimeout(resolve, 5000, undefined))])
    extra.destroy()
    assert.ok(r !== undefined, `connection ${limits.maxConnections + 1} was kept open: no connection cap`)
    assert.equal(r.answered, false, `connection ${limits.maxConnections + 1} was served: no connection cap`)
    held.pop()?.destroy()
    await waitFor(async () => (await status(port, path)) === 200, 'serving again once a connection closed', 10_000, 100)
    for (const s of held.splice(0)) s.destroy()

    // Headers sent one line and then nothing: closed after headersTimeout, not held for Node's default 60 s.
    const slow = await open(port)
    const started = Date.now()
    const slowClosed = closed(slow, started)
    slow.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n`)
    const deadline = limits.headersTimeout + 4000
    const s = await Promise.race([slowClosed, new Promise<undefined>((resolve) => setTimeout(resolve, deadline, undefined))])
    slow.destroy()
    assert.ok(s !== undefined, `a client trickling its headers was still connected after ${deadline} ms (headersTimeout ${limits.headersTimeout})`)
    assert.ok(s.ms >= limits.headersTimeout - 500, `closed after ${s.ms} ms, before headersTimeout ${limits.headersTimeout}: something else closed it`)
    return { slowClosedAfterMs: s.ms }
  } finally {
    for (const s of held) s.destroy()
  }
}

import { execFileSync } from 'node:child_process'
import { accessSync, constants, readFileSync, readlinkSync } from 'node:fs'
import { createServer } from 'node:net'
import { delimiter, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

/** Small process and port helpers for the dev launcher. Linux reads /proc; elsewhere `ps` answers. */

/** True while `pid` runs (a zombie waiting to be reaped counts as gone). */
export function isAlive (pid: number): boolean {
  try { process.kill(pid, 0) } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM' }
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')) } catch { return true }
}

/** The command line of `pid`, or '' when it does not run (used to tell our orphan from a reused pid). */
export function commandOf (pid: number): string {
  if (!isAlive(pid)) return ''
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim()
  } catch {
    try { return execFileSync('ps', ['-o', 'command=', '-p', String(pid)], { encoding: 'utf8' }).trim() } catch { return '' }
  }
}

/** The working directory of `pid` where the OS tells it (Linux), else undefined. A postmaster runs in its data dir. */
export function cwdOf (pid: number): string | undefined {
  try { return readlinkSync(`/proc/${pid}/cwd`) } catch { return undefined }
}

/** Send `signal`, wait up to `timeoutMs` for the exit, then SIGKILL. Returns true when it exited on `signal` alone. */
export async function stopPid (pid: number, signal: NodeJS.Signals, timeoutMs: number): Promise<boolean> {
  try { process.kill(pid, signal) } catch { return true }
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true
    await sleep(50)
  }
  try { process.kill(pid, 'SIGKILL') } catch {}
  while (isAlive(pid)) await sleep(50)
  return false
}

/** Resolves with `port` when 127.0.0.1:`port` can be bound right now, else with a port the OS picks. */
export async function portOrFree (port: number): Promise<number> {
  const tryListen = async (p: number): Promise<number | undefined> => await new Promise((resolve) => {
    const srv = createServer()
    srv.once('error', () => resolve(undefined))
    srv.listen(p, '127.0.0.1', () => {
      const addr = srv.address()
      const got = typeof addr === 'object' && addr !== null ? addr.port : undefined
      srv.close(() => resolve(got))
    })
  })
  return (await tryListen(port)) ?? (await tryListen(0)) ?? port
}

/** The first executable `name` on PATH, or undefined. */
export function findOnPath (name: string, path = process.env['PATH'] ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue
    const full = join(dir, name)
    try {
      accessSync(full, constants.X_OK)
      return full
    } catch {}
  }
  return undefined
}

/** Seconds since `start` (a Date.now() value), one decimal: "2.1 s". */
export function since (start: number): string {
  return `${((Date.now() - start) / 1000).toFixed(1)} s`
}

/** The last line of `text` that looks like an error (FATAL/ERROR/#), for a one-line failure message. */
export function lastErrorLine (text: string): string | undefined {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '')
  return [...lines].reverse().find((l) => /FATAL|ERROR|PANIC|# |error/i.test(l)) ?? lines.at(-1)
}

/** A failure the launcher reports as its one line (no stack) before stopping what it started. */
export class DevError extends Error {
  override name = 'DevError'
}

/** Run a command to its end; resolves with its exit code and combined output (never rejects on a non-zero exit). */
export async function run (cmd: string, args: string[], opts: { uid?: number, gid?: number, env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null, output: string }> {
  const { spawn } = await import('node:child_process')
  return await new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { output += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { output += d })
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, output }))
  })
}

/**
 * Who and which `pid` is: "<uid>:<start time in clock ticks since boot>" from /proc (Linux), else
 * undefined. Saved beside each pid the launcher starts, so a later launcher signals that same process
 * only, never one that reused its pid.
 */
export function identityOf (pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
    const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    return start === undefined || uid === undefined ? undefined : `${uid}:${start}`
  } catch {
    return undefined
  }
}

/** The real uid `pid` runs as (Linux), else undefined. */
export function uidOf (pid: number): number | undefined {
  const id = identityOf(pid)
  return id === undefined ? undefined : Number(id.split(':')[0])
}

/** The environment the servers (initdb, postgres, redis-server) get: nothing of ours (secrets, LD_*, NODE_*), only a plain PATH and the C locale. */
export function serverEnv (): NodeJS.ProcessEnv {
  return { PATH: '/usr/local/bin:/usr/bin:/bin', LC_ALL: 'C', LANG: 'C' }
}

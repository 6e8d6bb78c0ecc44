import { mkdirSync, readdirSync, statSync } from 'node:fs'
import { createConnection } from 'node:net'
import { join, resolve as resolvePath } from 'node:path'
import { parseArgs } from 'node:util'
import {
  PROTOCOL_VERSION, defaultControlDir, encode, resolveControlPath,
  type ControlResponse, type DiagnoseResult, type HelloResult, type ReloadReply, type StatusResult
} from './control-protocol.js'
import type { ScaleResult } from './types.js'

/**
 * The client half of the control socket: `nclust status | reload | scale | stop | diagnose`.
 * Each finds its cluster by `--control`, else `NCLUST_CONTROL`, else by asking every socket of the
 * default folder which one was started from this working directory.
 */
export const CONTROL_COMMANDS = ['status', 'reload', 'scale', 'stop', 'diagnose', 'upgrade'] as const

export const CONTROL_HELP = `Commands that talk to a running cluster (as the user that started it):
  nclust status [--json]                 the primary and every worker (pid, state, memory, cpu ...)
  nclust reload [--timeout <ms>]         rolling reload; exit 0 when every worker was replaced,
                                         1 when the new code failed to start (the old workers serve on)
  nclust scale <n>                       run n workers
  nclust stop                            graceful shutdown; exits with the cluster's exit code
  nclust upgrade [--node <path>]         replace the primary itself (new Node, new nclust): the sockets are
                                         handed over, nothing is refused; exit 1 with the new primary's
                                         error when it fails to start (the old one serves on). Also SIGUSR2
  nclust diagnose <worker> --report | --heap | --cpu <ms> [--out <dir>]
                                         a report (no env values), heap snapshot or CPU profile of one
                                         worker, written 0600 into <dir> (default: the cluster's reportDirectory)
  --control <path>                       the cluster's control socket (env NCLUST_CONTROL; default:
                                         the cluster started from this folder, found in ${defaultControlDir()})
`

class CliError extends Error {}

export async function runControl (argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        control: { type: 'string' },
        json: { type: 'boolean' },
        timeout: { type: 'string' },
        report: { type: 'boolean' },
        heap: { type: 'boolean' },
        cpu: { type: 'string' },
        out: { type: 'string' },
        node: { type: 'string' }
      }
    })
  } catch (err) {
    throw new CliError((err as Error).message.split('\n')[0])
  }
  const { values, positionals } = parsed
  const [command, ...rest] = positionals
  const path = await findSocket(values.control)
  const write = (line: string): void => { out.write(`${line}\n`) }
  const positiveInt = (name: string, raw: string | undefined): number | undefined => {
    if (raw === undefined) return undefined
    if (!/^\d+$/.test(raw) || Number(raw) < 1) throw new CliError(`${name} needs a positive integer of ms, got ${JSON.stringify(raw)}`)
    return Number(raw)
  }
  const noExtra = (n: number): void => { if (rest.length > n) throw new CliError(`unexpected argument "${rest[n] ?? ''}"`) }

  switch (command) {
    case 'status': {
      noExtra(0)
      const s = await call<StatusResult>(path, 'status')
      write(values.json === true ? JSON.stringify(s, null, 2) : formatStatus(s))
      return 0
    }
    case 'reload': {
      noExtra(0)
      const timeout = positiveInt('--timeout', values.timeout)
      const r = await call<ReloadReply>(path, 'reload', {}, timeout)
      const gen = (s: ReloadReply['slots'][number]): string => s.generation !== null && s.generation !== undefined ? ` (generation ${s.generation})` : ''
      for (const s of r.slots) write(s.new !== null ? `worker ${s.id}: ${s.old ?? '-'} -> ${s.new}${gen(s)}` : `worker ${s.id}: ${s.old ?? '-'} (not replaced)${gen(s)}`)
      if (r.ok) {
        write(`reloaded ${r.replaced} workers in ${(r.ms / 1000).toFixed(1)}s`)
        return 0
      }
      const f = r.failed
      if (f === undefined) {
        write(`reload did not finish: ${r.reason ?? 'unknown'}`)
        write(`serving: ${r.serving.join(', ') || 'none'}`)
        return 1
      }
      write(`reload failed: worker ${f.id}'s new generation${f.pid !== null ? ` (pid ${f.pid})` : ''} did not start (${f.reason})`)
      if (f.stack !== undefined) write(f.stack.split('\n').slice(0, 6).map((l) => `  ${l}`).join('\n'))
      else if (f.message !== undefined) write(`  ${f.message}`)
      write(`the old workers still serve: ${r.serving.join(', ')}`)
      return 1
    }
    case 'scale': {
      noExtra(1)
      const n = rest[0]
      if (n === undefined || !/^\d+$/.test(n)) throw new CliError(`scale needs a worker count: nclust scale <n>, got ${JSON.stringify(n ?? '')}`)
      const r = await call<ScaleResult>(path, 'scale', { n: Number(n) })
      write(r.ok ? `scaled from ${r.from} to ${r.size} workers in ${(r.ms / 1000).toFixed(1)}s` : `scale to ${r.to} failed: ${r.reason ?? 'unknown'}; ${r.size} workers run`)
      return r.ok ? 0 : 1
    }
    case 'stop': {
      noExtra(0)
      const r = await call<{ code: number }>(path, 'stop')
      write(`cluster stopped, exit code ${r.code}`)
      return r.code
    }
    case 'upgrade': {
      noExtra(0)
      const timeout = positiveInt('--timeout', values.timeout) ?? 600000
      const r = await call<{ ok: boolean, pid?: number, error?: string, ms: number }>(path, 'upgrade', values.node !== undefined ? { node: resolvePath(values.node) } : {}, timeout)
      write(r.ok ? `upgraded: the new primary (pid ${r.pid ?? '?'}) serves; the old one drains its workers and exits (${(r.ms / 1000).toFixed(1)}s)` : `upgrade failed: ${r.error ?? 'unknown'}; the old primary serves on`)
      return r.ok ? 0 : 1
    }
    case 'diagnose': {
      noExtra(1)
      const id = rest[0]
      if (id === undefined || !/^\d+$/.test(id)) throw new CliError('diagnose needs a worker id: nclust diagnose <worker> --report | --heap | --cpu <ms>')
      const kinds = [values.report === true && 'report', values.heap === true && 'heap', values.cpu !== undefined && 'cpu'].filter(Boolean)
      if (kinds.length !== 1) throw new CliError('diagnose needs exactly one of --report, --heap, --cpu <ms>')
      const kind = kinds[0] as 'report' | 'heap' | 'cpu'
      const ms = kind === 'cpu' ? positiveInt('--cpu', values.cpu) : undefined
      // Without --out the primary writes into the cluster's report folder (reportDirectory).
      const dir = values.out !== undefined ? resolvePath(values.out) : undefined
      if (dir !== undefined) mkdirSync(dir, { recursive: true, mode: 0o700 })
      const r = await call<DiagnoseResult>(path, 'diagnose', { worker: Number(id), kind, ...(dir !== undefined ? { dir } : {}), ...(ms !== undefined ? { ms } : {}) })
      write(`${r.file} (${(r.bytes / 1024).toFixed(0)} KiB, worker ${id} pid ${r.pid}, ${r.ms} ms)`)
      return 0
    }
    default:
      throw new CliError(`unknown command "${command ?? ''}" (nclust --help)`)
  }
}

/** Run and print: one line on stderr and exit 1 for anything that went wrong. */
export async function controlMain (argv: string[]): Promise<never> {
  let code: number
  try {
    code = await runControl(argv)
  } catch (err) {
    process.stderr.write(`nclust: ${(err as Error).message}\n`)
    code = 1
  }
  process.exitCode = code
  return await new Promise<never>(() => { process.exit(code) })
}

async function findSocket (flag: string | undefined): Promise<string> {
  if (flag !== undefined) return resolveControlPath(flag)
  const env = process.env.NCLUST_CONTROL
  if (env === 'false') throw new CliError('NCLUST_CONTROL=false: this cluster has no control socket')
  if (env !== undefined && env !== '') return resolveControlPath(env)
  // Discovery of the default: ask each socket in the folder who it is.
  const dir = defaultControlDir()
  let names: string[] = []
  try { names = readdirSync(dir).filter((n) => n.endsWith('.sock')) } catch {}
  const found: Array<{ path: string, hello: HelloResult }> = []
  for (const name of names) {
    const path = join(dir, name)
    try {
      if (!statSync(path).isSocket()) continue
      found.push({ path, hello: await call<HelloResult>(path, 'hello', {}, 2000) })
    } catch {} // stale or silent: not ours to report
  }
  const here = found.filter((f) => f.hello.cwd === process.cwd())
  if (here.length === 1 && here[0] !== undefined) return here[0].path
  if (here.length > 1) {
    throw new CliError(`${here.length} clusters run from ${process.cwd()}: ${here.map((f) => `${f.path} (pid ${f.hello.pid}, port ${f.hello.port})`).join(', ')}; choose one with --control`)
  }
  throw new CliError(`no running cluster started from ${process.cwd()} found in ${dir}` +
    `${found.length > 0 ? ` (${found.length} from other folders)` : ''}; give --control <path> or NCLUST_CONTROL`)
}

/** One request, one answer. `timeout` (ms) bounds the wait for the answer; none by default. */
export function call<T> (path: string, cmd: string, args: Record<string, unknown> = {}, timeout?: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const socket = createConnection(path)
    const chunks: Buffer[] = []
    let timer: NodeJS.Timeout | undefined
    if (timeout !== undefined) {
      timer = setTimeout(() => {
        socket.destroy()
        reject(new CliError(`no answer to ${cmd} within ${timeout}ms (it may still be running: nclust status)`))
      }, timeout)
    }
    socket.on('connect', () => socket.write(encode({ v: PROTOCOL_VERSION, cmd, args })))
    socket.on('data', (d) => chunks.push(d))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new CliError(`no cluster listens on ${path} (${err.code})`))
      else if (err.code === 'EACCES') reject(new CliError(`permission denied on ${path}: the control socket belongs to another user`))
      else reject(new CliError(`control socket ${path}: ${err.message}`))
    })
    socket.on('end', () => {
      clearTimeout(timer)
      const text = Buffer.concat(chunks).toString('utf8').trim()
      let res: ControlResponse<T>
      try { res = JSON.parse(text) as ControlResponse<T> } catch {
        reject(new CliError(`the cluster closed ${path} without an answer to ${cmd}`))
        return
      }
      if (res.ok) resolve(res.result)
      else reject(new CliError(`${cmd}: ${res.error.message}`))
    })
  })
}

function duration (s: number): string {
  if (s < 60) return `${Math.floor(s)}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor(s % 3600 / 60)).padStart(2, '0')}m`
  return `${Math.floor(s / 86400)}d${String(Math.floor(s % 86400 / 3600)).padStart(2, '0')}h`
}

export function formatStatus (s: StatusResult): string {
  const p = s.primary
  const head = `primary ${p.pid} · up ${duration(p.uptime)} · node ${p.node} · balance ${p.balance} · port ${p.port} · ` +
    `workers ${p.workers.ready}/${p.workers.desired} ready · restarts ${p.restarts}`
  const rows = [['id', 'pid', 'state', 'gen', 'uptime', 'rss', 'cpu', 'elu', 'requests', 'restarts', 'last exit']]
  for (const w of s.workers) {
    const e = w.lastExit
    rows.push([
      String(w.id), String(w.pid), w.state, String(w.generation), duration(w.uptime),
      w.rss === null ? '-' : `${(w.rss / 1048576).toFixed(0)} MB`,
      w.cpu === null ? '-' : `${w.cpu.toFixed(1)}%`,
      w.elu === null ? '-' : w.elu.toFixed(2),
      w.requests === null ? '-' : String(w.requests),
      String(w.restarts),
      e === null ? '-' : `${e.reason} (${e.signal ?? `code ${String(e.code)}`})${e.error !== undefined ? `: ${e.error}` : ''}`
    ])
  }
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? []
  return [head, ...rows.map((r) => r.map((c, i) => i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)).join('  '))].join('\n')
}

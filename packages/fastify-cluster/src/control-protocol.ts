import { homedir } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'

/**
 * The control socket's protocol, shared by the primary's server (primary/control.ts) and the
 * `nclust` client (control-client.ts): one request per connection, one JSON object per line.
 *
 *   client → primary   {"v":1,"cmd":"status","args":{}}\n
 *   primary → client   {"v":1,"ok":true,"result":{...}}\n   or   {"v":1,"ok":false,"error":{"code":"...","message":"..."}}\n
 *
 * A request larger than {@link MAX_REQUEST_BYTES}, or not complete within {@link IDLE_TIMEOUT_MS}
 * of connecting, is answered with an error and the connection is closed.
 */
export const PROTOCOL_VERSION = 1
export const MAX_REQUEST_BYTES = 64 * 1024
export const IDLE_TIMEOUT_MS = 5000
/** Connections served at once; more are answered `busy` and closed. */
export const MAX_CONNECTIONS = 16

export const COMMANDS = ['hello', 'status', 'reload', 'scale', 'stop', 'diagnose', 'upgrade'] as const
export type Command = typeof COMMANDS[number]

export interface ControlRequest {
  v: number
  cmd: Command
  args?: Record<string, unknown>
}

export interface ControlError {
  /** `unknown-command`, `bad-request`, `too-large`, `idle`, `version`, `busy`, `failed`. */
  code: string
  message: string
}

export type ControlResponse<T = unknown> =
  | { v: number, ok: true, result: T }
  | { v: number, ok: false, error: ControlError }

/** `hello`: who is listening, for the client's discovery of the default socket. */
export interface HelloResult { pid: number, cwd: string, port: number, argv: string[] }

export interface WorkerStatus {
  id: number
  pid: number
  state: string
  generation: number
  /** Seconds since the worker was forked. */
  uptime: number
  /** Bytes; null until its first heartbeat. */
  rss: number | null
  /** Percent of one core since its previous heartbeat. */
  cpu: number | null
  /** Event-loop utilisation (0..1) since its previous heartbeat. */
  elu: number | null
  /** Requests received (as counted for maxRequests). */
  requests: number | null
  /** Unexpected exits replaced in this slot. */
  restarts: number
  lastExit: { pid: number, reason: string, code: number | null, signal: string | null, error?: string } | null
}

export interface StatusResult {
  primary: {
    pid: number
    uptime: number
    node: string
    balance: string
    port: number
    cwd: string
    control: string
    workers: { desired: number, ready: number }
    restarts: number
  }
  workers: WorkerStatus[]
}

export interface ReloadReply {
  ok: boolean
  ms: number
  replaced: number
  /** One per slot as it was when the reload began: new is null where the old worker still serves. */
  slots: Array<{ id: number, old: number | null, new: number | null, generation: number | null }>
  failed?: { id: number, pid: number | null, reason: string, message?: string, stack?: string }
  /** Why it did not finish when no new worker failed (a shutdown began). */
  reason?: string
  /** The pids that serve once it is over. */
  serving: number[]
}

export type DiagnoseKind = 'report' | 'heap' | 'cpu'
/** IPC payload of the `nclust:diagnose` request and the worker's answer. */
export interface DiagnoseRequest { kind: DiagnoseKind, dir: string, ms?: number }
export interface DiagnoseResult { file: string, bytes: number, ms: number, pid: number }

/**
 * The default folder: `$XDG_RUNTIME_DIR/nclust` (a per-user tmpfs folder, 0700, that the login
 * manager or systemd creates) when set to an absolute path, else `~/.nclust/run`; created 0700 by
 * the primary. Never the shared temp folder. A relative XDG_RUNTIME_DIR is ignored, as the XDG Base
 * Directory spec says of every relative path in these variables: it would put the socket (and the
 * client's search for it) wherever the process happens to run from.
 */
export function defaultControlDir (env: Record<string, string | undefined> = process.env): string {
  const runtime = env.XDG_RUNTIME_DIR
  return runtime !== undefined && isAbsolute(runtime) ? join(runtime, 'nclust') : join(homedir(), '.nclust', 'run')
}

/**
 * The default socket: a hash of the working directory, the command line and the port (and the pid
 * with port 0), so two clusters started from different folders, entry scripts or ports never share one. The client
 * finds it by asking each socket of the folder who it is (`hello`).
 */
export function defaultControlPath (port: number, env: Record<string, string | undefined> = process.env,
  cwd = process.cwd(), argv: string[] = process.argv.slice(1)): string {
  // Port 0 is a new random port each run: two such clusters from one folder must not collide, so the pid joins in.
  const where = port === 0 ? `0/${process.pid}` : String(port)
  return join(defaultControlDir(env), `${hash(`${cwd}\0${argv.join('\0')}\0${where}`)}.sock`)
}

export function resolveControlPath (path: string, cwd = process.cwd()): string {
  return resolve(cwd, path)
}

/**
 * FNV-1a, twice with two offsets, as 16 hex digits. Not node:crypto: a file name needs no
 * cryptographic hash, and the primary's memory is counted. A collision could only make a second
 * cluster refuse to start (a live socket is never taken over), never reach the wrong one.
 */
function hash (text: string): string {
  const fnv = (seed: number): string => {
    let h = seed >>> 0
    for (let i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i)
      h = Math.imul(h, 0x01000193) >>> 0
    }
    return h.toString(16).padStart(8, '0')
  }
  return fnv(0x811c9dc5) + fnv(0x050c5d1f)
}

/**
 * Split a byte stream into lines, refusing any line over `max` bytes. `onLine` gets each complete
 * line; `onTooLarge` is called once and the splitter stops.
 */
export function lineSplitter (max: number, onLine: (line: string) => void, onTooLarge: () => void): (chunk: Buffer) => void {
  let parts: Buffer[] = []
  let size = 0
  let dead = false
  return (chunk) => {
    if (dead) return
    let start = 0
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, start)) {
      parts.push(chunk.subarray(start, i))
      size += i - start
      if (size > max) { dead = true; onTooLarge(); return }
      const line = Buffer.concat(parts).toString('utf8')
      parts = []
      size = 0
      start = i + 1
      onLine(line)
      if (dead) return
    }
    if (start < chunk.length) {
      parts.push(chunk.subarray(start))
      size += chunk.length - start
      if (size > max) { dead = true; onTooLarge() }
    }
  }
}

export function encode (value: unknown): string {
  return `${JSON.stringify(value)}\n`
}

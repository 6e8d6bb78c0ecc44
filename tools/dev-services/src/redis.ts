import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, fstatSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { ensureFolder, openPrivateLog, writeFresh } from './private.js'
import { DevError, findOnPath, lastErrorLine, serverEnv, stopPid } from './processes.js'
import type { RunAs } from './user.js'

/** A development redis-server from PATH: detached (stopped last, after the cluster), data under `<home>/redis`. */

export interface DevRedis { pid: number, port: number, url: string, stop: () => Promise<boolean> }

export const howToGetRedis = 'install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) ' +
  'or run one in a container (docker run -d -p 6379:6379 redis:7), or set REDIS_URL'

export function redisServerPath (): string {
  const bin = findOnPath('redis-server')
  if (bin === undefined) throw new DevError(`redis: nothing answers and there is no redis-server on PATH: ${howToGetRedis}`)
  return bin
}

/** PING `url` once: 'ok', 'refused' (nothing listens) or the reason something that answers refused us. */
export async function pingRedis (url: string, timeoutMs = 2000): Promise<'ok' | 'refused' | { reason: string }> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null
  })
  let refused = false
  client.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'ECONNREFUSED' || err.code === 'ETIMEDOUT') refused = true })
  try {
    await client.connect()
    return (await client.ping()) === 'PONG' ? 'ok' : { reason: 'PING did not answer PONG' }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (refused || code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || /ECONNREFUSED|connect ETIMEDOUT/.test(String((err as Error).message))) return 'refused'
    return { reason: (err as Error).message }
  } finally {
    client.disconnect()
  }
}

/**
 * redis-server on 127.0.0.1:`port`, as `runAs` when we are root (never as root: a Redis command such as
 * CONFIG SET dir + SAVE writes files as whoever runs it), with a password generated for this start.
 * Everything is in `home`/redis.conf (0600, that user's): the password never shows in `ps`, and any
 * other local user who connects gets NOAUTH. The app gets the password in REDIS_URL.
 */
export async function startRedis (bin: string, stateDir: string, home: string, port: number, runAs: RunAs | undefined, onSpawn: (pid: number) => void): Promise<DevRedis> {
  const dir = join(home, 'redis')
  ensureFolder(dir, 'redis: the data folder', { mode: 0o700, private: true, ...(runAs === undefined ? {} : { owner: runAs }) })
  const password = randomBytes(24).toString('hex')
  const conf = join(home, 'redis.conf')
  // Snapshots in `dir` (saved on shutdown and every 60 s with a change): the data survives a restart.
  writeFresh(conf, [
    `port ${port}`, 'bind 127.0.0.1', 'protected-mode yes', `dir ${JSON.stringify(dir)}`, 'dbfilename dump.rdb',
    'save 60 1', 'appendonly no', 'daemonize no', `requirepass ${password}`, ''
  ].join('\n'), runAs)
  const logFile = join(stateDir, 'redis.log')
  const fd = openPrivateLog(logFile)
  const logStart = fstatSync(fd).size
  const child = spawn(bin, [conf], {
    detached: true, stdio: ['ignore', fd, fd], env: serverEnv(), ...(runAs === undefined ? {} : { uid: runAs.uid, gid: runAs.gid })
  })
  closeSync(fd)
  const pid = child.pid
  if (pid === undefined) throw new DevError(`redis: could not start ${bin}`)
  onSpawn(pid)
  let exited = false
  child.once('exit', () => { exited = true })
  const url = `redis://:${password}@127.0.0.1:${port}`
  const deadline = Date.now() + 30000
  while ((await pingRedis(url, 1000)) !== 'ok') {
    if (exited || Date.now() > deadline) {
      if (!exited) await stopPid(pid, 'SIGTERM', 10000)
      throw new DevError(`redis: ${exited ? 'exited' : 'did not answer within 30 s'}: ${lastErrorLine(readFileSync(logFile, 'utf8').slice(logStart)) ?? 'no output'} (see ${logFile})`)
    }
    await sleep(100)
  }
  // SIGTERM: redis-server saves its snapshot, then exits.
  return { pid, port, url, stop: async () => await stopPid(pid, 'SIGTERM', 30000) }
}

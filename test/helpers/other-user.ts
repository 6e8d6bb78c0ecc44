/**
 * Running a real program as another system user, from a clone that user cannot read.
 *
 * A clone under /root (or any 0700 folder, as CI makes) is closed to every other user, so
 * `runuser -u other -- node <clone>/bin/x.js` fails with "Cannot find module" before it does what the
 * test means to check. These helpers copy what the program needs into a folder of that user's own
 * (made by mkdtemp, a name nobody knows first, chowned to the user, 0700), so the other uid runs the
 * real code from a place only it can read, and the clone's permissions no longer matter.
 */
import { spawnSync } from 'node:child_process'
import { chownSync, chmodSync, copyFileSync, cpSync, linkSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import type { TestContext } from 'node:test'

export interface OtherUser {
  name: string
  uid: number
  gid: number
  /** A folder owned by the user (0700), removed when the test ends. */
  home: string
  /** A node binary the user can run (this one, reached through `home` when its own folder is private). */
  node: string
  /** argv prefix that runs a command as the user: `['runuser', '-u', name, '--']`. */
  prefix: string[]
}

const idOf = (flag: '-u' | '-g', name: string): number => Number(spawnSync('id', [flag, name], { encoding: 'utf8' }).stdout.trim())
const runs = (user: string, file: string, args: string[]): boolean =>
  spawnSync('runuser', ['-u', user, '--', file, ...args], { timeout: 30000 }).status === 0

/**
 * A system user other than root (created with useradd when missing, deleted after the test if this
 * test created it), with a private folder of its own. Undefined (with the reason) when this process is
 * not root or the machine lacks runuser/useradd: a test then reports the check as skipped.
 */
export function otherUser (t: TestContext, name: string): OtherUser | string {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not root'
  if (spawnSync('sh', ['-c', 'command -v runuser && command -v useradd']).status !== 0) return 'no runuser/useradd'
  if (spawnSync('id', [name]).status !== 0) {
    const add = spawnSync('useradd', ['-r', '-M', '-U', '-s', '/usr/sbin/nologin', name], { encoding: 'utf8' })
    if (add.status !== 0) throw new Error(`useradd ${name}: ${add.stderr}`)
    t.after(() => { spawnSync('userdel', [name]) })
  }
  const uid = idOf('-u', name)
  const gid = idOf('-g', name)
  const home = mkdtempSync(join(tmpdir(), 'nclust-other-user-')) // 0700, root's until chowned below
  chownSync(home, uid, gid)
  t.after(() => rmSync(home, { recursive: true, force: true }))
  // This test's node may sit in a folder private to root (a Node cache under /root): then give the
  // user its own hard link to it (same file, no copy), or a copy when the link crosses filesystems.
  let node = process.execPath
  if (!runs(name, node, ['--version'])) {
    node = join(home, 'node')
    try { linkSync(process.execPath, node) } catch { copyFileSync(process.execPath, node) }
    chmodSync(node, 0o755)
    if (!runs(name, node, ['--version'])) throw new Error(`the user ${name} cannot run ${node}`)
  }
  return { name, uid, gid, home, node, prefix: ['runuser', '-u', name, '--'] }
}

/**
 * Copy `paths` (files or folders, symlinks resolved) into `<user.home>/<dir>/`, each under its own
 * base name, owned by the user. Returns that folder.
 */
export function copyForUser (user: OtherUser, dir: string, paths: string[]): string {
  const target = join(user.home, dir)
  for (const p of paths) cpSync(p, join(target, basename(p)), { recursive: true, dereference: true })
  const own = spawnSync('chown', ['-R', `${user.uid}:${user.gid}`, target], { encoding: 'utf8' })
  if (own.status !== 0) throw new Error(`chown ${target}: ${own.stderr}`)
  return target
}

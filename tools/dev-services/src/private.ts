import { closeSync, constants, fchmodSync, fchownSync, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, rmSync, writeSync, type Stats } from 'node:fs'
import { dirname } from 'node:path'
import { DevError } from './processes.js'

/**
 * Files and folders the dev launcher trusts: its state folder (pids it may signal, the Postgres
 * password, logs) and, as root, the folders the unprivileged user's servers run from. Everything is
 * checked with lstat/fstat and opened with O_NOFOLLOW, so another local user cannot hand the launcher
 * a symlink, a folder they can write, or a file they wrote first. Node's fs has no "safe open" helper
 * and no library we found does these three checks together, hence these few functions.
 */

const O_NOFOLLOW = constants.O_NOFOLLOW ?? 0
const myUid = (): number => process.getuid?.() ?? -1
const octal = (mode: number): string => (mode & 0o7777).toString(8).padStart(4, '0')

/** Why `st` (lstat of `path`) is not a folder owned by `uid` that nobody else can write, or undefined when it is. */
function folderProblem (path: string, st: Stats, uid: number): string | undefined {
  if (st.isSymbolicLink()) return `${path} is a symlink`
  if (!st.isDirectory()) return `${path} is not a folder`
  if (uid >= 0 && st.uid !== uid) return `${path} belongs to uid ${st.uid}, not ${uid}`
  if ((st.mode & 0o022) !== 0) return `${path} is writable by group or others (mode ${octal(st.mode)}; chmod go-w ${path} if nobody else wrote to it)`
  return undefined
}

/**
 * `dir` exists as a real folder (not a symlink) owned by `owner.uid` (default: us) that no group or
 * other user can write, created with `mode` (and chowned to `owner`) when missing. Its parents are
 * created as usual when missing. Throws a DevError naming `what` otherwise.
 */
export function ensureFolder (dir: string, what: string, opts: { mode?: number, owner?: { uid: number, gid: number }, private?: boolean } = {}): void {
  const owner = opts.owner
  const uid = owner?.uid ?? myUid()
  let st: Stats | undefined
  try { st = lstatSync(dir) } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err }
  if (st === undefined) {
    mkdirSync(dirname(dir), { recursive: true })
    try {
      mkdirSync(dir, { mode: opts.mode ?? 0o700 })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err // created meanwhile: checked below
    }
    st = lstatSync(dir)
    if (st.isDirectory() && !st.isSymbolicLink() && st.uid === myUid() && owner !== undefined && owner.uid !== myUid()) {
      // Created by us a moment ago (root): hand it to the user the servers run as.
      chownNoFollow(dir, owner)
      st = lstatSync(dir)
    }
  }
  const problem = folderProblem(dir, st, uid)
  if (problem !== undefined) throw new DevError(`${what}: ${problem}; refusing to use it (remove it, or point elsewhere)`)
  if (opts.private === true && (st.mode & 0o077) !== 0) {
    // Ours (or our servers' user's), nobody else can write it, only readable by others (an earlier
    // launcher created it with the umask's mode): make it private, through a descriptor opened without
    // following a symlink.
    const fd = openSync(dir, constants.O_RDONLY | (constants.O_DIRECTORY ?? 0) | O_NOFOLLOW)
    try { fchmodSync(fd, 0o700) } finally { closeSync(fd) }
  }
}

/** chown a folder we just created without following a symlink put in its place (open O_DIRECTORY|O_NOFOLLOW, fchown). */
function chownNoFollow (dir: string, owner: { uid: number, gid: number }): void {
  const fd = openSync(dir, constants.O_RDONLY | (constants.O_DIRECTORY ?? 0) | O_NOFOLLOW)
  try { fchownSync(fd, owner.uid, owner.gid) } finally { closeSync(fd) }
}

/** Every parent of `path` up to /: owned by root or `uid`, and not writable by others unless sticky (as /tmp). */
export function checkParents (path: string, uid: number, what: string): void {
  let dir = dirname(path)
  for (;;) {
    const st = lstatSync(dir)
    const sticky = (st.mode & 0o1000) !== 0
    const bad = st.isSymbolicLink()
      ? `${dir} is a symlink`
      : (st.uid !== 0 && st.uid !== uid)
          ? `${dir} belongs to uid ${st.uid}`
          : ((st.mode & 0o022) !== 0 && !(sticky && st.uid === 0)) ? `${dir} is writable by group or others (mode ${octal(st.mode)})` : undefined
    if (bad !== undefined) throw new DevError(`${what}: ${bad}, so another user could replace what the launcher keeps below it; choose another folder`)
    const up = dirname(dir)
    if (up === dir) return
    dir = up
  }
}

/** Open `path` for writing without following a symlink, as a regular file of ours, mode 0600 (fixed if it was looser). */
function openPrivate (path: string, flags: number, owner?: { uid: number, gid: number }): number {
  let fd: number
  try {
    fd = openSync(path, flags | O_NOFOLLOW | constants.O_CREAT, 0o600)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new DevError(`${path} is a symlink; refusing to write through it (remove it)`)
    throw err
  }
  const st = fstatSync(fd)
  if (!st.isFile() || (st.uid !== myUid() && st.uid !== owner?.uid)) {
    closeSync(fd)
    throw new DevError(`${path} is not a regular file of ours (uid ${st.uid}); refusing to write to it (remove it)`)
  }
  if ((st.mode & 0o077) !== 0) fchmodSync(fd, 0o600)
  if (owner !== undefined && st.uid !== owner.uid) fchownSync(fd, owner.uid, owner.gid)
  return fd
}

/** Replace the contents of `path` (0600, ours or `owner`'s, never through a symlink). */
export function writePrivate (path: string, data: string, owner?: { uid: number, gid: number }): void {
  const fd = openPrivate(path, constants.O_WRONLY | constants.O_TRUNC, owner)
  try { writeSync(fd, data) } finally { closeSync(fd) }
}

/** An append descriptor on `path` (0600, never through a symlink): for logs handed to a server's stdout. */
export function openPrivateLog (path: string): number {
  return openPrivate(path, constants.O_WRONLY | constants.O_APPEND)
}

/** The contents of `path`, or undefined when missing; refused when a symlink, not ours, or readable by others. */
export function readPrivate (path: string): string | undefined {
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY | O_NOFOLLOW)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return undefined
    if (code === 'ELOOP') throw new DevError(`${path} is a symlink; refusing to read it (remove it)`)
    throw err
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile() || st.uid !== myUid() || (st.mode & 0o077) !== 0) {
      throw new DevError(`${path} is not a private file of ours (uid ${st.uid}, mode ${octal(st.mode)}); refusing to trust it (remove it)`)
    }
    return readFileSync(fd, 'utf8')
  } finally {
    closeSync(fd)
  }
}

/**
 * A new file at `path` (0600, given to `owner`), whatever was there removed first and the new one
 * created with O_EXCL|O_NOFOLLOW: for files root writes into a folder the unprivileged user owns,
 * where that user could have left a symlink or a hard link to a file of root's.
 */
export function writeFresh (path: string, data: string, owner?: { uid: number, gid: number }): void {
  rmSync(path, { force: true }) // unlink: removes a symlink itself, never its target
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | O_NOFOLLOW, 0o600)
  try {
    if (owner !== undefined) fchownSync(fd, owner.uid, owner.gid)
    writeSync(fd, data)
  } finally {
    closeSync(fd)
  }
}

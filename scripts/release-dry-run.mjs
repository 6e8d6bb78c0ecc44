// `pnpm release:dry-run`: everything `pnpm release` would publish, without publishing. Runs
// `pnpm publish -r --dry-run` (the command `changeset publish` runs for a pnpm workspace, with the
// same publishConfig) and checks what it would publish:
//   - exactly the packages in packages/ (never the private example or bench),
//   - each tarball with its package.json, README.md, LICENSE, CHANGELOG.md and the file `main` names
//     (a tarball without dist/ means `pnpm build` did not run).
// Prints one line per package; on any problem one line naming it and exit 1. Needs the registry:
// pnpm asks it which versions exist (an already published version is skipped, and reported here).
// Build first (`pnpm build`); `pnpm release` does.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const root = new URL('..', import.meta.url).pathname

function fail (message) {
  console.error(`release:dry-run: ${message}`)
  process.exit(1)
}

/** The publishable packages: every package.json under packages/, by name. */
const expected = new Map()
for (const dir of readdirSync(join(root, 'packages'), { withFileTypes: true })) {
  if (!dir.isDirectory()) continue
  const pkg = JSON.parse(readFileSync(join(root, 'packages', dir.name, 'package.json'), 'utf8'))
  if (pkg.private === true) fail(`packages/${dir.name} (${pkg.name}) is private: packages/ holds only what is published`)
  expected.set(pkg.name, pkg)
}

// --report-summary writes pnpm-publish-summary.json into the current folder: a private temporary one.
const work = mkdtempSync(join(tmpdir(), 'nclust-release-dry-run-'))
let run, summary
try {
  run = spawnSync('pnpm', ['--dir', root, 'publish', '-r', '--dry-run', '--no-git-checks', '--report-summary'], {
    cwd: work, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024
  })
  try { summary = JSON.parse(readFileSync(join(work, 'pnpm-publish-summary.json'), 'utf8')) } catch {}
  try { summary ??= JSON.parse(readFileSync(join(root, 'pnpm-publish-summary.json'), 'utf8')) } catch {}
} finally {
  rmSync(work, { recursive: true, force: true })
  rmSync(join(root, 'pnpm-publish-summary.json'), { force: true })
}
const output = `${run.stdout ?? ''}${run.stderr ?? ''}`
if (run.status !== 0) {
  process.stderr.write(output)
  fail(`pnpm publish -r --dry-run exited ${run.status ?? run.signal}`)
}
if (summary === undefined) fail('pnpm wrote no pnpm-publish-summary.json')

const published = summary.publishedPackages.map((p) => p.name)
const extra = published.filter((name) => !expected.has(name))
if (extra.length > 0) fail(`would publish ${extra.join(', ')}: not in packages/ (private: true missing?)`)
const missing = [...expected.keys()].filter((name) => !published.includes(name))
if (missing.length > 0) fail(`would not publish ${missing.join(', ')} (version already on the registry? run pnpm version-packages first)`)

// npm's dry-run listing: "npm notice Tarball Contents", "npm notice <size> <path>" lines, then
// "npm notice Tarball Details" with "name: <package>". One block per package, in publish order.
const files = new Map()
let current = []
for (const line of output.split('\n')) {
  const m = /npm notice (?:(Tarball Contents)|(Tarball Details)|name:\s+(\S+)|[\d.]+k?M?B\s+(\S.*))\s*$/.exec(line)
  if (m === null) continue
  if (m[1] !== undefined) current = []
  else if (m[3] !== undefined) files.set(m[3], current)
  else if (m[4] !== undefined) current.push(m[4].trim())
}
for (const [name, pkg] of expected) {
  const listed = files.get(name)
  if (listed === undefined) fail(`no tarball listing for ${name} in npm's output`)
  const must = ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', String(pkg.main ?? '').replace(/^\.\//, '')]
  const absent = must.filter((f) => f !== '' && !listed.includes(f))
  if (absent.length > 0) fail(`${name}'s tarball lacks ${absent.join(', ')}${absent.some((f) => f.startsWith('dist/')) ? ' (run pnpm build first)' : ''}`)
  const version = summary.publishedPackages.find((p) => p.name === name).version
  console.log(`release:dry-run: ${name}@${version} (${listed.length} files)`)
}

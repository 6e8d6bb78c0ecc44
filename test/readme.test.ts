// The root README (and CONTRIBUTING.md), as written. The two samples a user copies run as real clusters (`node server.mjs`
// with its startClustered, `nclust start ./app.js` with its fastify-cli module): 2 workers answer what
// the sample returns, SIGTERM exits 0 and leaves no process. Every command it shows is one that exists
// (a script of package.json, a package of packages/, the nclust bin), `.ci/run` runs its test command,
// every relative link leads to a file (in CONTRIBUTING.md too, whose commands are checked the same
// way), and it stays short (the rest lives in CONTRIBUTING.md and
// bench/README.md).
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { distinct, freePort, get, isAlive, spawnNode, waitFor, type Spawned } from './helpers/index.ts'

const root = new URL('..', import.meta.url).pathname
const readme = readFileSync(join(root, 'README.md'), 'utf8')
const contributing = readFileSync(join(root, 'CONTRIBUTING.md'), 'utf8')
const rootPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string>, packageManager: string }

/** The fenced blocks of a markdown text, with their language. */
const fenced = (md: string): Array<{ lang: string, body: string }> => [...md.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map((m) => ({ lang: m[1] ?? '', body: m[2] ?? '' }))
/** Every command of the sh blocks: comments stripped, `a && b` split. */
const commandsOf = (md: string): string[] => fenced(md).filter((b) => b.lang === 'sh').flatMap((b) => b.body.split('\n'))
  .map((l) => l.replace(/(^|\s)#.*$/, '').trim()).filter((l) => l !== '')
  .flatMap((l) => l.split('&&').map((c) => c.trim()))
const blocks = fenced(readme)
/** The js block whose first line is `// <name>: ...`: a file the reader saves as <name>. */
function sample (name: string): string {
  const block = blocks.find((b) => b.lang === 'js' && b.body.startsWith(`// ${name}:`))
  assert.ok(block !== undefined, `the README has a js block starting "// ${name}:"`)
  return block.body
}
const commands = commandsOf(readme)

/** Published packages (packages/*) and what they depend on or peer with: what `npm install` may name. */
const installable = new Set<string>()
for (const dir of readdirSync(join(root, 'packages'))) {
  const pkg = JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8')) as Record<string, any>
  installable.add(pkg['name'])
  for (const dep of Object.keys({ ...pkg['dependencies'], ...pkg['peerDependencies'] })) installable.add(dep)
}

const temporary: string[] = []
after(() => { for (const dir of temporary) rmSync(dir, { recursive: true, force: true }) })
/** A private folder inside the repository (git-ignored .tmp/), so the samples resolve the workspace's packages as a project's node_modules would. */
function projectDir (): string {
  mkdirSync(join(root, '.tmp'), { recursive: true })
  const dir = mkdtempSync(join(root, '.tmp', 'readme-'))
  temporary.push(dir)
  return dir
}

test('short, with the samples and the two workspace commands; the rest in CONTRIBUTING.md and bench/README.md', () => {
  const lines = readme.trimEnd().split('\n').length
  assert.ok(lines <= 110, `the README is ${lines} lines: keep it near 90, move detail to CONTRIBUTING.md or bench/README.md`)
  assert.match(sample('server.mjs'), /startClustered\(/)
  assert.ok(commands.some((c) => /^npx nclust start \S+/.test(c)), 'an `npx nclust start <module>` command')
  for (const c of ['pnpm install', 'pnpm start', 'pnpm test']) assert.ok(commands.includes(c), `the README shows ${c}`)
  for (const doc of ['CONTRIBUTING.md', 'bench/README.md']) assert.ok(readme.includes(`](${doc})`), `links ${doc}`)
})

test('every command it and CONTRIBUTING.md show exists: pnpm scripts, npm packages, node files, the nclust bin', () => {
  const samples = new Set(blocks.flatMap((b) => /^\/\/ (\S+):/.exec(b.body)?.[1] ?? []))
  const bins = Object.keys((JSON.parse(readFileSync(join(root, 'packages/fastify-cluster/package.json'), 'utf8')) as { bin: Record<string, string> }).bin)
  const all = [...commands, ...commandsOf(contributing)]
  assert.ok(commands.length >= 6 && all.length > commands.length, all.join('\n'))
  for (const command of all) {
    const words = command.replace(/^(\w+=\S+\s+)+/, '').split(/\s+/)
    const [tool, first, ...rest] = words
    if (tool === 'pnpm' && first === 'install') continue
    if (tool === 'npm' && first === 'install' && rest[0] === '-g') {
      assert.equal(rest[1], rootPkg.packageManager, `${command}: the pnpm package.json pins`)
      continue
    }
    if (tool === 'pnpm') assert.ok(first !== undefined && first in rootPkg.scripts, `pnpm ${String(first)} is a script of package.json`)
    else if (tool === 'npm' && first === 'install') {
      for (const name of rest.filter((w) => !w.startsWith('-'))) assert.ok(installable.has(name.replace(/(.)@.*$/, '$1')), `npm install ${name}: a package of packages/ or one they depend on`)
    } else if (tool === 'node') assert.ok(first !== undefined && (samples.has(first) || existsSync(join(root, first))), `node ${String(first)}: a sample of the README or a file of the repository`)
    else if (tool === 'npx') assert.ok(first !== undefined && bins.includes(first), `npx ${String(first)}: a bin of @nclust/fastify-cluster`)
    else assert.fail(`a command the test does not know how to check: ${command}`)
  }
})

test('.ci/run runs the README\'s test command', () => {
  const ci = readFileSync(join(root, '.ci', 'run'), 'utf8').split('\n').filter((l) => !/^\s*#/.test(l)).join('\n')
  assert.ok(commands.includes('pnpm test'))
  assert.match(ci, /^\s*(?:\w+=\S+\s+)*pnpm test\b/m, '.ci/run calls pnpm test')
})

test('every relative link of README.md and CONTRIBUTING.md leads to a file or folder of the repository', () => {
  for (const [name, md] of [['README.md', readme], ['CONTRIBUTING.md', contributing]] as const) {
    const links = [...md.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1] as string).filter((l) => !/^[a-z]+:/.test(l) && !l.startsWith('#'))
    assert.ok(links.length >= 3, `${name}: ${links.join(' ')}`)
    for (const link of links) assert.ok(existsSync(join(root, link.replace(/#.*$/, ''))), `${name}: ${link} exists`)
  }
})

/** Ready: `count` workers answered GET / 200 on fresh connections, with the sample's body. */
async function assertServes (proc: Spawned, port: number, count: number): Promise<Set<number>> {
  await waitFor(async () => {
    if (proc.child.exitCode !== null) throw new Error(`exited ${proc.child.exitCode}:\n${proc.output().slice(-3000)}`)
    try { return (await get(port, '/', { timeout: 5000 })).status === 200 } catch { return false }
  }, 'GET / answered 200', 60_000, 100)
  const first = await get(port, '/')
  assert.equal(first.json().hello, 'world')
  return await distinct(port, '/', (b: { pid: number }) => b.pid, count)
}

/** SIGTERM to the primary: exit 0, and the primary and every worker that answered are gone. */
async function assertCleanStop (proc: Spawned, workers: Set<number>): Promise<void> {
  proc.child.kill('SIGTERM')
  const { code } = await proc.waitForExit(60_000)
  assert.equal(code, 0, proc.output().slice(-3000))
  await waitFor(() => [proc.pid, ...workers].every((p) => !isAlive(p)), 'the primary and its workers gone', 10_000)
}

const env = async (): Promise<Record<string, string>> => ({ PORT: String(await freePort()), WORKER_COUNT: '2', HOST: '127.0.0.1', NCLUST_CONTROL: 'false', LOG_LEVEL: 'warn' })

test('server.mjs as written: `node server.mjs` serves on 2 workers, SIGTERM exits 0 leaving nothing', async () => {
  const dir = projectDir()
  writeFileSync(join(dir, 'server.mjs'), sample('server.mjs'))
  assert.ok(commands.some((c) => /^node server\.mjs$/.test(c)), 'the README runs it with `node server.mjs`')
  const e = await env()
  const proc = spawnNode(join(dir, 'server.mjs'), { cwd: dir, env: e })
  try {
    const workers = await assertServes(proc, Number(e['PORT']), 2)
    assert.ok(!workers.has(proc.pid), 'the workers are not the primary')
    await assertCleanStop(proc, workers)
  } finally { await proc.cleanup() }
})

test('app.js as written (a CommonJS fastify-cli module): `npx nclust start ./app.js` serves on 2 workers, SIGTERM exits 0', async () => {
  const dir = projectDir()
  writeFileSync(join(dir, 'app.js'), sample('app.js'))
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'readme-app', private: true, type: 'commonjs' }))
  const command = commands.find((c) => /^npx nclust start /.test(c)) ?? assert.fail('no npx nclust start command')
  const args = command.split(/\s+/).slice(2)
  const e = await env()
  const proc = spawnNode(join(root, 'packages', 'fastify-cluster', 'bin', 'nclust.js'), { cwd: dir, env: e, args })
  try {
    const workers = await assertServes(proc, Number(e['PORT']), 2)
    await assertCleanStop(proc, workers)
  } finally { await proc.cleanup() }
})

// Runs every test file of the workspace through node:test in ONE run, one file at a time.
// One file at a time because many files fork real clusters and the machine has 2 cores:
// running them in parallel turns generous deadlines into flakes. Node 20's `--test` takes no globs,
// hence this file. Usage: node scripts/run-tests.mjs [path-prefix ...]
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { spawn } from 'node:child_process'

const root = new URL('..', import.meta.url).pathname
const roots = ['packages', 'examples', 'tools', 'test']
const files = []
function walk (dir) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist' || name === 'fixtures') continue
    const full = join(dir, name)
    if (statSync(full).isDirectory()) walk(full)
    else if (/\.test\.(ts|mjs|js)$/.test(name)) files.push(relative(root, full))
  }
}
for (const r of roots) walk(join(root, r))
const filters = process.argv.slice(2)
const selected = files
  .filter((f) => filters.length === 0 || filters.some((p) => f.startsWith(p) || f.includes(p)))
  .sort()
if (selected.length === 0) {
  console.error('no test files matched', filters)
  process.exit(1)
}
const args = [
  '--import', 'tsx',
  '--test',
  '--test-concurrency=1',
  '--test-timeout=180000',
  `--test-reporter=${process.env.TEST_REPORTER ?? 'spec'}`,
  ...selected
]
const child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit' })
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))

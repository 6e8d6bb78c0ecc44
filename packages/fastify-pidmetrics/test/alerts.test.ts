import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { PROMTOOL, requireTool, skipWithout } from './helpers.js'

const dir = fileURLToPath(new URL('../prometheus/', import.meta.url))
const skip = skipWithout(PROMTOOL, 'promtool')

function promtool (...args: string[]): { status: number | null, out: string } {
  const r = spawnSync(requireTool(PROMTOOL, 'promtool'), args, { cwd: dir, encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` }
}

test('promtool check rules accepts prometheus/alerts.yml', { skip }, () => {
  const r = promtool('check', 'rules', 'alerts.yml')
  assert.equal(r.status, 0, r.out)
  assert.match(r.out, /SUCCESS: 8 rules found/)
})

test('promtool test rules: every alert fires on its sample series and stays quiet on the others', { skip }, () => {
  const r = promtool('test', 'rules', 'alerts.test.yml')
  assert.equal(r.status, 0, r.out)
  assert.match(r.out, /SUCCESS/)
})

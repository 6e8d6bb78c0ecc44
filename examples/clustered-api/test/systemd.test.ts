// deploy/nclust-example.service: `systemd-analyze verify` where systemd is installed (any warning
// fails), the timing and reload relations asserted, and the paths it runs checked in this checkout.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const unitPath = new URL('../deploy/nclust-example.service', import.meta.url).pathname
const repoRoot = new URL('../../..', import.meta.url).pathname
const unit = readFileSync(unitPath, 'utf8')

/** Key=value of the unit (the last one wins, as systemd reads single-valued keys; Environment= collected). */
function directives (): { one: Map<string, string>, env: Map<string, string> } {
  const one = new Map<string, string>()
  const env = new Map<string, string>()
  for (const line of unit.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim())
    if (m === null) continue
    const [, key = '', value = ''] = m
    if (key === 'Environment') {
      const [k = '', ...v] = value.split('=')
      env.set(k, v.join('='))
    } else one.set(key, value)
  }
  return { one, env }
}

test('the systemd unit: reload through nclust, SIGTERM to the primary, stop timeout above the drain deadline, a private control socket', () => {
  const { one, env } = directives()
  assert.match(one.get('Type') ?? '', /^(simple|notify)$/)
  assert.equal(one.get('KillSignal'), 'SIGTERM')
  assert.equal(one.get('KillMode'), 'mixed')
  const shutdownMs = Number(env.get('SHUTDOWN_TIMEOUT'))
  const stopS = Number(one.get('TimeoutStopSec'))
  assert.ok(shutdownMs > 0 && stopS * 1000 > shutdownMs, `TimeoutStopSec ${stopS}s above SHUTDOWN_TIMEOUT ${shutdownMs}ms`)
  assert.equal(one.get('RuntimeDirectoryMode'), '0700')
  assert.equal(env.get('NCLUST_CONTROL'), `%t/${one.get('RuntimeDirectory') ?? '?'}/control.sock`)

  // ExecStart / ExecReload run files that exist in this layout (/srv/nclust is the checkout).
  const local = (p: string): string => p.replace(/^\/srv\/nclust\//, repoRoot)
  const [, startScript = ''] = (one.get('ExecStart') ?? '').split(' ')
  assert.ok(existsSync(local(startScript)), `ExecStart runs ${startScript}`)
  const [, reloadBin = '', ...reloadArgs] = (one.get('ExecReload') ?? '').split(' ')
  assert.deepEqual(reloadArgs.slice(0, 1), ['reload'])
  assert.ok(existsSync(local(reloadBin)), `ExecReload runs ${reloadBin}`)
  const help = spawnSync(process.execPath, [local(reloadBin), '--help'], { encoding: 'utf8' })
  assert.equal(help.status, 0)
  assert.match(help.stdout, /nclust reload \[--timeout <ms>\]/)
})

test('the systemd unit: hang reports and diagnose files in its private StateDirectory, and nothing in its sandbox that stops the hang capture', () => {
  const { one, env } = directives()
  // ProtectSystem=strict leaves the default report folder (~/.local/state) read-only: the unit gives one.
  const state = one.get('StateDirectory') ?? '?'
  assert.equal(one.get('StateDirectoryMode'), '0700')
  assert.equal(env.get('NCLUST_REPORT_DIR'), `%S/${state}`, 'NCLUST_REPORT_DIR points at the StateDirectory')
  // The capture (hangProbe on-hang) signals the unit's own workers and talks to them over loopback TCP.
  const families = one.get('RestrictAddressFamilies')
  if (families !== undefined) assert.match(families, /(^|\s)AF_INET(\s|$)/, 'loopback TCP allowed')
  if (one.get('IPAddressDeny') !== undefined) assert.match(one.get('IPAddressAllow') ?? '', /localhost|127\.0\.0\.1/)
  assert.doesNotMatch(one.get('ExecStart') ?? '', /--disable-sigusr1/)
  assert.notEqual(env.get('NCLUST_HANG_PROBE'), 'off', 'the hang capture is on')
})

test('systemd-analyze verify accepts the unit without a warning', (t) => {
  if (spawnSync('systemd-analyze', ['--version']).status !== 0) {
    t.skip('systemd-analyze is not installed here')
    return
  }
  const dir = mkdtempSync(join(tmpdir(), 'nclust-unit-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  // The one machine-specific part: where node is installed.
  const file = join(dir, 'nclust-example.service')
  writeFileSync(file, unit.replaceAll('/usr/bin/node ', `${process.execPath} `))
  const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  assert.equal(r.stderr.trim(), '', 'no warning')

  // The check's own check: a typo is reported.
  writeFileSync(file, unit.replace('KillSignal=SIGTERM', 'KillSignal=SIGTREM').replaceAll('/usr/bin/node ', `${process.execPath} `))
  const bad = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' })
  assert.match(bad.stderr, /Failed to parse signal name/)
})

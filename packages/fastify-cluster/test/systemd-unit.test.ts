import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execArg, reloadBoundMs } from '../src/systemd/unit.ts'

/** `nclust systemd`: what it prints is what `systemd-analyze verify` accepts, with timeouts from the options. */

const bin = fileURLToPath(new URL('../bin/nclust.js', import.meta.url))
const app = fileURLToPath(new URL('./fixtures/app.mjs', import.meta.url))
const exampleDeploy = fileURLToPath(new URL('../../../examples/clustered-api/deploy/', import.meta.url))
const hasAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0

function values (unit: string, key: string): string[] {
  return unit.split('\n').filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1))
}

test('pure parts: the reload bound and ExecStart quoting', () => {
  assert.equal(reloadBoundMs({ workers: 4, startTimeout: 30000, startRetries: 2, shutdownTimeout: 20000, port: 1, host: 'x' }), 4 * 90000 + 20000)
  assert.equal(execArg('/srv/app.js'), '/srv/app.js')
  assert.equal(execArg('/srv/my app.js'), '"/srv/my app.js"')
  assert.equal(execArg('a%b'), '"a%%b"')
})

test('nclust systemd prints a .service and .socket that systemd-analyze verify accepts, timeouts from the options', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-unit-'))
  chmodSync(dir, 0o700)
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const r = spawnSync(process.execPath, [bin, 'systemd', '-w', '3', '-p', '8081', '-a', '127.0.0.1', '--shutdown-timeout', '20000', '--name', 'myapi', '--user', 'myapi', '--watchdog-sec', '20', app, '--out', dir], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
  const service = readFileSync(join(dir, 'myapi.service'), 'utf8')
  const socket = readFileSync(join(dir, 'myapi.socket'), 'utf8')
  assert.deepEqual(values(service, 'Type'), ['notify'])
  assert.deepEqual(values(service, 'NotifyAccess'), ['all'])
  assert.deepEqual(values(service, 'User'), ['myapi'])
  assert.ok(Number(values(service, 'TimeoutStopSec')[0]) > 20, 'stop timeout above the 20 s shutdown deadline')
  const reload = 3 * 30000 * 3 + 20000
  assert.ok(values(service, 'ExecReload')[0]?.endsWith(`reload --timeout ${reload}`))
  assert.ok(Number(values(service, 'TimeoutStartSec')[0]) * 1000 > reload, 'TimeoutStartSec (which bounds ExecReload) above the reload bound')
  assert.deepEqual(values(service, 'WatchdogSec'), ['20'])
  assert.equal(values(service, 'ExecStart')[0], `${process.execPath} ${bin} start -w 3 -p 8081 -a 127.0.0.1 --shutdown-timeout 20000 ${app}`)
  for (const k of ['NoNewPrivileges', 'PrivateTmp', 'ProtectSystem', 'ProtectHome', 'StateDirectory', 'RuntimeDirectoryMode', 'KillMode']) assert.equal(values(service, k).length, 1, k)
  assert.deepEqual(values(socket, 'ListenStream'), ['127.0.0.1:8081'])
  assert.deepEqual(values(socket, 'FileDescriptorName'), ['http'])

  // Printed (no --out): both units, the socket after a separator.
  const printed = spawnSync(process.execPath, [bin, 'systemd', '--name', 'myapi', app], { encoding: 'utf8' })
  assert.equal(printed.status, 0, printed.stderr)
  assert.match(printed.stdout, /# ---- myapi\.socket ----\n/)
  // A bad flag: exit 1, one line naming it.
  const bad = spawnSync(process.execPath, [bin, 'systemd', '--shutdown-timeout', 'soon', app], { encoding: 'utf8' })
  assert.equal(bad.status, 1)
  assert.match(bad.stderr, /^nclust systemd: .*--shutdown-timeout.*\n$/)

  if (!hasAnalyze) { t.diagnostic('systemd-analyze is not installed: verify skipped'); return }
  const v = spawnSync('systemd-analyze', ['verify', join(dir, 'myapi.service'), join(dir, 'myapi.socket')], { encoding: 'utf8' })
  assert.equal(v.status, 0, v.stderr)
  assert.equal(v.stderr.trim(), '', 'no warning')
  // the check's own check: a broken unit is reported
  writeFileSync(join(dir, 'myapi.service'), service.replace('KillSignal=SIGTERM', 'KillSignal=SIGTREM'))
  assert.match(spawnSync('systemd-analyze', ['verify', join(dir, 'myapi.service'), join(dir, 'myapi.socket')], { encoding: 'utf8' }).stderr, /Failed to parse signal name/)
})

test('the example ships a .socket beside its .service; systemd-analyze verify accepts the pair', { skip: hasAnalyze ? undefined : 'no systemd-analyze' }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nclust-unit-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const service = readFileSync(join(exampleDeploy, 'nclust-example.service'), 'utf8').replaceAll('/usr/bin/node ', `${process.execPath} `)
  writeFileSync(join(dir, 'nclust-example.service'), service)
  writeFileSync(join(dir, 'nclust-example.socket'), readFileSync(join(exampleDeploy, 'nclust-example.socket'), 'utf8'))
  const v = spawnSync('systemd-analyze', ['verify', join(dir, 'nclust-example.socket'), join(dir, 'nclust-example.service')], { encoding: 'utf8' })
  assert.equal(v.status, 0, v.stderr)
  assert.equal(v.stderr.trim(), '', 'no warning')
  assert.deepEqual(values(service, 'Type'), ['notify'])
})

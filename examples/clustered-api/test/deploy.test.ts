// The Kubernetes manifests in deploy/: validated offline against the Kubernetes API schemas
// (`kubernetes-models`, generated from the Kubernetes OpenAPI spec, and its Prometheus Operator
// models), checked for unknown fields (a typo such as `readinesProbe` is silently dropped by some
// clients: TypeScript's excess-property check against the same generated types catches it), their
// timing relations asserted, and the Deployment's own env run for real: the built server in
// single-process mode answering the probes the way the kubelet asks them, through a Redis outage,
// a frozen process and a SIGTERM.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import ts from 'typescript'
import { parseAllDocuments } from 'yaml'
import { Deployment, type IDeployment } from 'kubernetes-models/apps/v1/Deployment'
import { Service, type IService } from 'kubernetes-models/v1/Service'
import { PodDisruptionBudget, type IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import { NetworkPolicy, type INetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy'
import { ServiceMonitor, type IServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor'
import type { IContainer } from 'kubernetes-models/v1/Container'
import type { IProbe } from 'kubernetes-models/v1/Probe'
import { DATABASE_URL, REDIS_URL, TEST_SECRET, deleteKeys, dropSchema, isolation } from './helpers.js'
import { freePort, get, isAlive, spawnNode, waitFor } from '../../../test/helpers/index.ts'
import { ensureBuilt } from './cluster-harness.js'
import { TcpProxy } from './proxy.js'

const exampleDir = new URL('..', import.meta.url).pathname
const deployDir = join(exampleDir, 'deploy')

/** apiVersion/kind → the model class that validates it and the TypeScript type (module, name) it must fit. */
const models: Record<string, { Model: new (data: any) => { validate: () => void }, module: string, type: string }> = {
  'apps/v1/Deployment': { Model: Deployment, module: 'kubernetes-models/apps/v1/Deployment', type: 'IDeployment' },
  'v1/Service': { Model: Service, module: 'kubernetes-models/v1/Service', type: 'IService' },
  'policy/v1/PodDisruptionBudget': { Model: PodDisruptionBudget, module: 'kubernetes-models/policy/v1/PodDisruptionBudget', type: 'IPodDisruptionBudget' },
  'networking.k8s.io/v1/NetworkPolicy': { Model: NetworkPolicy, module: 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy', type: 'INetworkPolicy' },
  'monitoring.coreos.com/v1/ServiceMonitor': { Model: ServiceMonitor, module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor', type: 'IServiceMonitor' }
}

interface Doc { file: string, index: number, key: string, body: Record<string, any> }

function yamlFiles (dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = join(dir, name)
    return statSync(full).isDirectory() ? yamlFiles(full) : /\.ya?ml$/.test(name) ? [full] : []
  }).sort()
}

function loadDocs (): Doc[] {
  return yamlFiles(deployDir).flatMap((full) => parseAllDocuments(readFileSync(full, 'utf8')).map((d, index) => {
    assert.deepEqual(d.errors.map((e) => e.message), [], `${relative(exampleDir, full)}: YAML parses`)
    const body = d.toJS() as Record<string, any>
    return { file: relative(exampleDir, full), index, key: `${String(body['apiVersion'])}/${String(body['kind'])}`, body }
  }))
}

/**
 * Every document as a typed literal in a throwaway TypeScript file, compiled with the real generated
 * types: an unknown field anywhere is an excess-property error, a wrong type or enum value a type
 * error. `extra` adds literals that must fail (the check's own check). Returns the diagnostics.
 */
function typecheck (docs: Array<{ name: string, key: string, body: unknown }>): string[] {
  // Inside the example's node_modules so the packages resolve; never committed, removed afterwards.
  const dir = join(exampleDir, 'node_modules', '.cache', `deploy-typecheck-${process.pid}`)
  mkdirSync(dir, { recursive: true })
  const file = join(dir, 'manifests.ts')
  const imports = [...new Set(docs.map((d) => d.key))].map((k) => {
    const m = models[k]
    assert.ok(m !== undefined, `a model for ${k}`)
    return `import type { ${m.type} } from '${m.module}'`
  })
  const consts = docs.map((d) => `export const ${d.name}: ${models[d.key]?.type ?? 'never'} = ${JSON.stringify(d.body, null, 2)}`)
  writeFileSync(file, [...imports, ...consts].join('\n'))
  try {
    const program = ts.createProgram([file], {
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      types: [],
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext
    })
    return ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file !== undefined && d.start !== undefined ? `line ${d.file.getLineAndCharacterOfPosition(d.start).line + 1}: ` : ''
      return where + ts.flattenDiagnosticMessageText(d.messageText, '\n')
    })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const docs = loadDocs()
const only = <T>(key: string): T => {
  const found = docs.filter((d) => d.key === key)
  assert.equal(found.length, 1, `exactly one ${key} in deploy/`)
  return (found[0] as Doc).body as T
}
const deployment = only<IDeployment>('apps/v1/Deployment')
const service = only<IService>('v1/Service')
const pdb = only<IPodDisruptionBudget>('policy/v1/PodDisruptionBudget')
const monitor = only<IServiceMonitor>('monitoring.coreos.com/v1/ServiceMonitor')
const policy = only<INetworkPolicy>('networking.k8s.io/v1/NetworkPolicy')
const pod = deployment.spec?.template.spec
const container = pod?.containers.find((c) => c.name === 'api') as IContainer
const env = Object.fromEntries((container?.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value as string]))
const envNum = (name: string): number => {
  const v = env[name]
  assert.ok(v !== undefined && /^\d+$/.test(v), `${name} is set to an integer (got ${String(v)})`)
  return Number(v)
}
const podLabels = deployment.spec?.template.metadata?.labels ?? {}
const matches = (selector: Record<string, string> | undefined): boolean =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => podLabels[k] === v)
const probePath = (p: IProbe | undefined): string | undefined => p?.httpGet?.path

test('every manifest in deploy/ validates against the Kubernetes schemas', () => {
  assert.deepEqual(docs.map((d) => d.key).sort(), Object.keys(models).sort(), 'a Deployment, a Service, a PodDisruptionBudget, a ServiceMonitor and a NetworkPolicy')
  for (const d of docs) {
    const m = models[d.key]
    assert.ok(m !== undefined, `${d.file}: no schema for ${d.key}`)
    assert.doesNotThrow(() => new m.Model(d.body).validate(), `${d.file} #${d.index} (${d.key})`)
  }
  // The validator does reject a bad value: a port that is not an integer.
  const broken = structuredClone(deployment) as any
  broken.spec.template.spec.containers[0].ports[0].containerPort = 'http'
  assert.throws(() => new Deployment(broken).validate(), /containerPort must be integer/)
})

test('no unknown or mistyped field anywhere (excess-property check against the generated API types)', () => {
  const typo = structuredClone(deployment) as any
  typo.spec.template.spec.containers[0].readinesProbe = typo.spec.template.spec.containers[0].readinessProbe
  const diagnostics = typecheck([
    ...docs.map((d, i) => ({ name: `doc${i}`, key: d.key, body: d.body })),
    { name: 'mustFail', key: 'apps/v1/Deployment', body: typo }
  ])
  const [typoErrors, others] = [diagnostics.filter((d) => d.includes('readinesProbe')), diagnostics.filter((d) => !d.includes('readinesProbe'))]
  assert.deepEqual(others, [], 'the manifests type-check against the Kubernetes API types')
  assert.equal(typoErrors.length, 1, 'and the check catches a misspelled field (readinesProbe)')
})

test('the Deployment: single-process pods, probes, resources, and the shutdown timing relations', () => {
  assert.ok(pod !== undefined && container !== undefined, 'a container named api')
  assert.equal(env['WORKER_COUNT'], '1', 'one process per pod: replicas are the workers')
  assert.equal(env['NODE_ENV'], 'production')
  for (const name of ['DATABASE_URL', 'REDIS_URL', 'JWT_SECRET']) {
    assert.ok(container.env?.find((e) => e.name === name)?.valueFrom?.secretKeyRef !== undefined, `${name} comes from a Secret`)
  }
  const port = container.ports?.find((p) => p.name === 'http')
  assert.equal(port?.containerPort, envNum('PORT'), 'the container port is the one the app listens on')

  const drainDelay = envNum('DRAIN_DELAY')
  const shutdownTimeout = envNum('SHUTDOWN_TIMEOUT')
  const grace = pod.terminationGracePeriodSeconds
  assert.ok(grace !== undefined, 'terminationGracePeriodSeconds is set')
  assert.ok(grace * 1000 > drainDelay + shutdownTimeout,
    `terminationGracePeriodSeconds (${grace} s) above DRAIN_DELAY + SHUTDOWN_TIMEOUT (${drainDelay + shutdownTimeout} ms): the app exits before SIGKILL`)
  assert.ok(drainDelay < shutdownTimeout / 2, 'DRAIN_DELAY below half of SHUTDOWN_TIMEOUT (the app refuses to start otherwise)')

  const readiness = container.readinessProbe
  const liveness = container.livenessProbe
  assert.equal(probePath(readiness), '/health', 'readiness on /health (dependencies and draining)')
  assert.equal(readiness?.httpGet?.port, 'http')
  const readinessPeriod = (readiness?.periodSeconds ?? 10) * 1000
  assert.ok(drainDelay >= readinessPeriod * (readiness?.failureThreshold ?? 3),
    `DRAIN_DELAY (${drainDelay} ms) covers the readiness probe turning the pod NotReady (${readinessPeriod} ms x ${readiness?.failureThreshold ?? 3})`)
  assert.ok((readiness?.timeoutSeconds ?? 1) * 1000 > envNum('HEALTH_TIMEOUT'), 'the readiness timeout leaves /health its own HEALTH_TIMEOUT to answer')
  assert.equal(probePath(liveness), '/live', 'liveness on /live: the event loop only, no dependency')
  assert.notEqual(probePath(liveness), probePath(readiness), 'a dependency outage must not restart pods')
  assert.ok(liveness?.timeoutSeconds !== undefined && liveness.failureThreshold !== undefined && liveness.periodSeconds !== undefined)
  assert.ok(liveness.periodSeconds * liveness.failureThreshold > (readiness?.periodSeconds ?? 10), 'liveness is slower to act than readiness')
  assert.equal(probePath(container.startupProbe), '/live')

  const { requests, limits } = container.resources ?? {}
  assert.ok(requests?.['cpu'] !== undefined && requests['memory'] !== undefined, 'cpu and memory requests')
  assert.ok(limits?.['cpu'] !== undefined && limits['memory'] !== undefined, 'a CPU limit (and a memory limit)')
  assert.equal(deployment.spec?.strategy?.rollingUpdate?.maxUnavailable, 0, 'surge first: a new pod is Ready before an old one stops')
})

test('Service, PodDisruptionBudget and scrape config select the Deployment\'s pods and port', () => {
  assert.ok(matches(deployment.spec?.selector.matchLabels), 'the Deployment selects its own pods')
  assert.ok(matches(service.spec?.selector), 'the Service selects the pods')
  assert.equal(service.spec?.ports?.[0]?.targetPort, 'http', 'the Service targets the named container port')
  assert.ok(matches(pdb.spec?.selector?.matchLabels), 'the PodDisruptionBudget covers the pods')
  assert.ok(pdb.spec?.maxUnavailable !== undefined || pdb.spec?.minAvailable !== undefined)
  assert.ok((deployment.spec?.replicas ?? 1) > Number(pdb.spec?.maxUnavailable ?? 0), 'a drain never takes every replica')
  const annotations = deployment.spec?.template.metadata?.annotations ?? {}
  assert.equal(annotations['prometheus.io/scrape'], 'true')
  assert.equal(annotations['prometheus.io/port'], env['METRICS_PORT'], 'Prometheus scrapes the metrics port, never the app port')
  assert.notEqual(env['METRICS_PORT'], env['PORT'])
  assert.equal(container.ports?.find((p) => p.name === 'metrics')?.containerPort, envNum('METRICS_PORT'), 'the metrics port is declared')
  assert.equal(env['METRICS_HOST'], '0.0.0.0', 'reachable from Prometheus, not only from the pod itself')
  assert.equal(service.spec?.ports?.find((p) => p.name === 'metrics')?.targetPort, 'metrics', 'the Service names the metrics port for the ServiceMonitor')
  assert.equal(annotations['prometheus.io/path'], '/metrics')
  assert.ok(Object.entries(monitor.spec.selector.matchLabels ?? {}).every(([k, v]) => service.metadata?.labels?.[k] === v), 'the ServiceMonitor selects the Service')
  assert.deepEqual(monitor.spec.endpoints?.map((e) => [e.port, e.path]), [['metrics', '/metrics']], 'and scrapes its named metrics port')
})

test('the NetworkPolicy: the app port open, the metrics port only from Prometheus', () => {
  assert.ok(matches(policy.spec?.podSelector?.matchLabels), 'it selects the Deployment\'s pods')
  assert.deepEqual(policy.spec?.policyTypes, ['Ingress'], 'it restricts ingress')
  const rules = policy.spec?.ingress ?? []
  // A rule lets a port in when it names it or names no port at all; from anyone when it has no `from`.
  const letsIn = (port: string) => rules.filter((r) => r.ports === undefined || r.ports.length === 0 || r.ports.some((p) => p.port === port))
  assert.ok(letsIn('http').some((r) => r.from === undefined || r.from.length === 0), 'the app port is reachable (ingress controller, other services)')
  const metricsRules = letsIn('metrics')
  assert.ok(metricsRules.length > 0, 'the metrics port is reachable by someone (Prometheus)')
  for (const r of metricsRules) {
    assert.ok(r.from !== undefined && r.from.length > 0, 'no rule opens the metrics port to every source')
    for (const peer of r.from) assert.ok(peer.ipBlock === undefined && peer.podSelector?.matchLabels !== undefined, 'only selected pods, not address ranges or whole namespaces')
  }
  for (const name of ['http', 'metrics']) assert.ok(container.ports?.some((p) => p.name === name), `the named port ${name} exists on the container`)
})

test('the Deployment\'s env, run for real: probes answer as the kubelet expects, through an outage, a freeze and a SIGTERM', async () => {
  ensureBuilt()
  const { schema, prefix } = isolation('deploy')
  const redisProxy = TcpProxy.forUrl(REDIS_URL)
  await redisProxy.start()
  const port = await freePort()
  const metricsPort = await freePort()
  const drainDelay = envNum('DRAIN_DELAY')
  const grace = (pod?.terminationGracePeriodSeconds ?? 0) * 1000
  const probe = async (p: IProbe | undefined): Promise<number> => {
    try {
      return (await get(port, probePath(p) ?? '/', { timeout: (p?.timeoutSeconds ?? 1) * 1000 })).status
    } catch { return 0 } // no answer within timeoutSeconds: a failed probe
  }
  // The Deployment's literal env, with only the secrets and where the services are replaced.
  const proc = spawnNode(join(exampleDir, 'dist', 'server.js'), {
    env: {
      ...env,
      PORT: String(port),
      HOST: '127.0.0.1',
      METRICS_PORT: String(metricsPort),
      METRICS_HOST: '127.0.0.1',
      DATABASE_URL,
      REDIS_URL: redisProxy.rewrite(REDIS_URL),
      JWT_SECRET: TEST_SECRET,
      PG_SCHEMA: schema,
      REDIS_PREFIX: prefix
    }
  })
  try {
    await waitFor(async () => await probe(container.startupProbe) === 200, 'the startup probe', 30000, 200)
    assert.equal(await probe(container.readinessProbe), 200, 'ready')
    // Single-process mode: the one process serves; no worker (the preflight child has come and gone).
    const children = (): string => { try { return readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim() } catch { return '' } }
    await waitFor(() => children() === '', 'no child process left once serving', 10000, 100)
    assert.equal(JSON.parse((await get(port, '/live')).body).pid, proc.pid, 'the spawned process itself answers')
    // Prometheus' target: the metrics port answers with this process' series; the app port has none.
    const scraped = await get(metricsPort, '/metrics')
    assert.equal(scraped.status, 200)
    assert.match(scraped.body, new RegExp(`^process_cpu_user_seconds_total\\{pid="${proc.pid}",worker="0"\\} `, 'm'))
    assert.equal((await get(port, '/metrics')).status, 404)

    // Redis away: not ready (traffic goes elsewhere), still alive (no restart).
    await redisProxy.cut()
    await waitFor(async () => await probe(container.readinessProbe) === 503, 'readiness 503 while Redis is away', 15000, 200)
    assert.equal(await probe(container.livenessProbe), 200, 'liveness does not fail for a dependency outage')
    await redisProxy.restore()
    await waitFor(async () => await probe(container.readinessProbe) === 200, 'ready again', 20000, 200)

    // A process that does not run (SIGSTOP: no event loop turn at all) fails liveness within its timeout.
    process.kill(proc.pid, 'SIGSTOP')
    const t0 = Date.now()
    assert.equal(await probe(container.livenessProbe), 0, 'a frozen process fails the liveness probe')
    // The client's timers are coarse (undici checks its timeouts about once a second): allow that.
    assert.ok(Date.now() - t0 <= (container.livenessProbe?.timeoutSeconds ?? 1) * 1000 + 1500, 'at the probe timeout')
    process.kill(proc.pid, 'SIGCONT')
    await waitFor(async () => await probe(container.livenessProbe) === 200, 'alive again after SIGCONT', 10000, 100)

    // SIGTERM as the kubelet sends it: NotReady at once, still serving during DRAIN_DELAY, exit 0 before the grace period.
    const termAt = Date.now()
    proc.child.kill('SIGTERM')
    await waitFor(async () => await probe(container.readinessProbe) === 503, 'readiness 503 right after SIGTERM', 2000, 50)
    await sleep(Math.min(drainDelay / 2, 2000))
    assert.equal((await get(port, '/live')).status, 200, 'a new connection is still served during DRAIN_DELAY')
    const exit = await proc.waitForExit(grace)
    const ms = Date.now() - termAt
    assert.deepEqual(exit, { code: 0, signal: null }, 'exit 0 on SIGTERM')
    assert.ok(ms >= drainDelay - 100, `kept serving for DRAIN_DELAY (${ms} ms >= ${drainDelay})`)
    assert.ok(ms < grace, `exited in ${ms} ms, before terminationGracePeriodSeconds (${grace} ms)`)
    assert.ok(!isAlive(proc.pid))
  } finally {
    try { process.kill(proc.pid, 'SIGCONT') } catch {}
    await proc.cleanup()
    await redisProxy.close()
    await dropSchema(schema)
    await deleteKeys(prefix)
  }
})

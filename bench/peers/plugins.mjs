// Row 2 of bench/compare.mjs: one hello-world Fastify process with the nclust plugins, pinned to one
// core by the driver. Prints READY <port>. argv[2]:
//   bare | bare-aa | drain | pidmetrics | both            (the row; bare-aa: a second bare, registers nothing)
//   empty-hook | pidmetrics-nodefault | both-nodefault     (where the cost is: BENCH_PLUGIN_VARIANTS)
import clusterDrain from '@nclust/fastify-drain'
import { pidMetrics } from '@nclust/fastify-pidmetrics'
import { buildApp } from './app.mjs'

const variant = process.argv[2] ?? 'bare'
const app = buildApp()
if (variant === 'drain' || variant.startsWith('both')) await app.register(clusterDrain)
if (variant === 'pidmetrics' || variant === 'both') await app.register(pidMetrics)
if (variant === 'pidmetrics-nodefault' || variant === 'both-nodefault') await app.register(pidMetrics, { defaultMetrics: false })
if (variant === 'empty-hook') app.addHook('onResponse', (_request, _reply, done) => { done() })
await app.listen({ port: Number(process.env.PORT), host: '127.0.0.1' })
process.stdout.write(`READY ${process.env.PORT}\n`)

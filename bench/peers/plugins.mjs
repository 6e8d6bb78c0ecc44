// Row 2 of bench/compare.mjs: one hello-world Fastify process with the nclust plugins, pinned to one
// core by the driver. argv[2]: bare | drain | pidmetrics | both. Prints READY <port>.
import clusterDrain from '@nclust/fastify-drain'
import { pidMetrics } from '@nclust/fastify-pidmetrics'
import { buildApp } from './app.mjs'

const variant = process.argv[2] ?? 'bare'
const app = buildApp()
if (variant === 'drain' || variant === 'both') await app.register(clusterDrain)
if (variant === 'pidmetrics' || variant === 'both') await app.register(pidMetrics)
await app.listen({ port: Number(process.env.PORT), host: '127.0.0.1' })
process.stdout.write(`READY ${process.env.PORT}\n`)

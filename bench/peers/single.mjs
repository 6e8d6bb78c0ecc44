// One Fastify process, as most apps start: listen and nothing else (no signal handling).
import { buildApp } from './app.mjs'

const app = buildApp()
await app.listen({ port: Number(process.env.PORT), host: '127.0.0.1' })
process.stdout.write(`READY ${process.env.PORT}\n`)

// The hello-world app as a module (fastify-cli shape): what `nclust start` and the URL form take.
export default async function (fastify) {
  fastify.get('/', async () => ({ pid: process.pid }))
}

import net from 'node:net'

/**
 * A TCP proxy the test can cut and restore, to take Redis or Postgres away from the app without
 * touching the shared services. `cut()` stops listening and destroys every open connection (the app
 * sees resets, then refused connections); `restore()` listens again on the same port.
 */
export class TcpProxy {
  port = 0
  private server: net.Server | undefined
  private readonly sockets = new Set<net.Socket>()

  constructor (private readonly targetHost: string, private readonly targetPort: number) {}

  static forUrl (url: string): TcpProxy {
    const u = new URL(url)
    const defaultPort = u.protocol.startsWith('redis') ? 6379 : 5432
    return new TcpProxy(u.hostname, u.port === '' ? defaultPort : Number(u.port))
  }

  /** `url` with its host:port replaced by this proxy's. */
  rewrite (url: string): string {
    const u = new URL(url)
    u.hostname = '127.0.0.1'
    u.port = String(this.port)
    return u.toString()
  }

  async start (): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, this.targetHost)
      this.sockets.add(client)
      this.sockets.add(upstream)
      const drop = (): void => {
        client.destroy()
        upstream.destroy()
        this.sockets.delete(client)
        this.sockets.delete(upstream)
      }
      client.on('error', drop).on('close', drop)
      upstream.on('error', drop).on('close', drop)
      client.pipe(upstream)
      upstream.pipe(client)
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject)
        resolve()
      })
    })
    this.port = (server.address() as net.AddressInfo).port
    this.server = server
  }

  async cut (): Promise<void> {
    const server = this.server
    this.server = undefined
    for (const s of this.sockets) s.destroy()
    this.sockets.clear()
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  /** Listen again on the same port (retrying briefly in case the port lingers). */
  async restore (): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.start()
        return
      } catch (err) {
        if (attempt >= 50) throw err
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
  }

  get connections (): number {
    return this.sockets.size
  }

  async close (): Promise<void> {
    await this.cut()
  }
}

// The app as PM2 runs it in cluster mode (pm2 start pm2-entry.cjs -i 2): each instance listens on
// PORT; PM2's daemon is the cluster primary. No signal handling, like the other plain variants.
import('./app.mjs').then(({ buildApp }) => buildApp().listen({ port: Number(process.env.PORT), host: '127.0.0.1' }))

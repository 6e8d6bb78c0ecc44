// The launcher's decision for each service, as a pure function: given URL or not, what the probe got.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { checkUrls, decide, portFrom, where } from '../src/plan.js'

test('a given URL that answers is used; one that does not stops the launcher naming it, without its password', () => {
  const given = 'postgres://app:secret@db.local:5433/app'
  assert.deepEqual(decide('postgres', { given, port: 5432, answer: 'ok' }), {
    plan: { kind: 'given', url: given },
    line: 'postgres: using DATABASE_URL (db.local:5433/app): it answers'
  })
  assert.throws(() => decide('postgres', { given, port: 5432, answer: 'refused' }),
    { name: 'DevError', message: 'postgres: DATABASE_URL (db.local:5433/app) is set but nothing answers; start it, fix DATABASE_URL, or unset it to get a development Postgres' })
  assert.throws(() => decide('redis', { given: 'redis://:pw@cache:6379', port: 6379, answer: { reason: 'NOAUTH' } }),
    (err: Error) => err.message === 'redis: REDIS_URL (cache:6379) is set but it refuses (NOAUTH); start it, fix REDIS_URL, or unset it to get a development Redis' && !err.message.includes('pw'))
})

test('no URL: a local server that answers is used, else one is started on the preferred port', () => {
  assert.deepEqual(decide('redis', { given: '', port: 6380, answer: 'ok' }), {
    plan: { kind: 'local', url: 'redis://127.0.0.1:6380' },
    line: 'redis: REDIS_URL not set; a server answers on 127.0.0.1:6380: using redis://127.0.0.1:6380'
  })
  assert.deepEqual(decide('postgres', { given: '', port: 15432, answer: 'refused' }), {
    plan: { kind: 'embedded', port: 15432 },
    line: 'postgres: DATABASE_URL not set and on 127.0.0.1:15432 nothing answers: an embedded Postgres will start'
  })
  // Something answers but refuses us (a password we do not have): start our own, and say why.
  assert.deepEqual(decide('postgres', { given: '', port: 5432, answer: { reason: 'password authentication failed' } }).line,
    'postgres: DATABASE_URL not set and on 127.0.0.1:5432 it refuses (password authentication failed): an embedded Postgres will start')
})

test('ports and URLs from the environment: bad ones are one line naming the variable', () => {
  assert.equal(portFrom({}, 'NCLUST_DEV_PG_PORT', 5432), 5432)
  assert.equal(portFrom({ NCLUST_DEV_PG_PORT: '' }, 'NCLUST_DEV_PG_PORT', 5432), 5432)
  assert.equal(portFrom({ NCLUST_DEV_PG_PORT: '15432' }, 'NCLUST_DEV_PG_PORT', 5432), 15432)
  for (const bad of ['0', '65536', '1.5', 'abc', '-1']) {
    assert.throws(() => portFrom({ NCLUST_DEV_REDIS_PORT: bad }, 'NCLUST_DEV_REDIS_PORT', 6379),
      { message: `Invalid environment: NCLUST_DEV_REDIS_PORT must be a port from 1 to 65535 (got "${bad}")` })
  }
  assert.doesNotThrow(() => checkUrls({ DATABASE_URL: 'postgres://u@h:5432/d', REDIS_URL: '' }))
  assert.throws(() => checkUrls({ DATABASE_URL: 'postgres://u:secret@db:notaport/x' }), { message: /^Invalid environment: DATABASE_URL is not a valid URL/ })
  assert.throws(() => checkUrls({ REDIS_URL: 'redis://' }), { message: /^Invalid environment: REDIS_URL is not a valid URL \(expected redis:/ })
  assert.equal(where('redis://:pw@127.0.0.1:6379'), '127.0.0.1:6379')
  assert.equal(where('postgres://u@db/app'), 'db:(default port)/app')
})

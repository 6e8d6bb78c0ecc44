import type { FastifyInstance } from 'fastify'
import { tables } from '../db.js'
import { withPg } from '../errors.js'

const note = {
  type: 'object',
  properties: {
    id: { type: 'integer' },
    title: { type: 'string' },
    body: { type: 'string' },
    createdAt: { type: 'string' }
  }
} as const

interface NoteRow { id: string, title: string, body: string, created_at: Date }

const toNote = (r: NoteRow): { id: number, title: string, body: string, createdAt: string } =>
  ({ id: Number(r.id), title: r.title, body: r.body, createdAt: r.created_at.toISOString() })

const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'integer', minimum: 1, maximum: 9007199254740991 } }
} as const

/** The logged-in user's notes, in Postgres: written through one worker, readable through any other. */
export function notesRoutes (app: FastifyInstance): void {
  const t = tables(app.config.pgSchema)
  const cols = 'id, title, body, created_at'

  app.post<{ Body: { title: string, body?: string } }>('/notes', {
    preHandler: app.authenticate,
    schema: {
      body: {
        type: 'object',
        required: ['title'],
        additionalProperties: false,
        properties: {
          title: { type: 'string', minLength: 1, maxLength: 200 },
          body: { type: 'string', maxLength: 10000 }
        }
      },
      response: { 201: note }
    }
  }, async (request, reply) => {
    const { rows } = await withPg(() => app.pg.query<NoteRow>(
      `INSERT INTO ${t.notes} (user_id, title, body) VALUES ($1, $2, $3) RETURNING ${cols}`,
      [request.user.sub, request.body.title, request.body.body ?? '']))
    return reply.code(201).send(toNote(rows[0] as NoteRow))
  })

  app.get<{ Querystring: { limit: number, cursor?: number } }>('/notes', {
    preHandler: app.authenticate,
    schema: {
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          limit: { type: 'integer', minimum: 1, maximum: 100, default: 50 },
          // Keyset pagination: the nextCursor of the previous page (notes older than that id). Stable
          // while notes are added or deleted, and an index range scan on (user_id, id DESC) at any depth.
          cursor: { type: 'integer', minimum: 1, maximum: 9007199254740991 }
        }
      },
      response: {
        200: {
          type: 'object',
          properties: { notes: { type: 'array', items: note }, nextCursor: { type: ['integer', 'null'] } }
        }
      }
    }
  }, async (request) => {
    const { limit, cursor } = request.query
    // One row more than asked says whether there is a next page, without a count.
    const { rows } = await withPg(() => app.pg.query<NoteRow>(
      `SELECT ${cols} FROM ${t.notes} WHERE user_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3`,
      [request.user.sub, cursor ?? null, limit + 1]))
    const page = rows.slice(0, limit).map(toNote)
    return { notes: page, nextCursor: rows.length > limit ? (page[page.length - 1]?.id ?? null) : null }
  })

  app.get<{ Params: { id: number } }>('/notes/:id', {
    preHandler: app.authenticate,
    schema: { params: idParams, response: { 200: note } }
  }, async (request, reply) => {
    // Scoped by owner: someone else's note is a 404, not a 403, so ids of other users leak nothing.
    const { rows } = await withPg(() => app.pg.query<NoteRow>(
      `SELECT ${cols} FROM ${t.notes} WHERE id = $1 AND user_id = $2`, [request.params.id, request.user.sub]))
    const row = rows[0]
    if (row === undefined) return reply.code(404).send({ statusCode: 404, error: 'Not Found', code: 'NOTE_NOT_FOUND', message: `note ${request.params.id} not found`, requestId: request.id })
    return toNote(row)
  })

  app.delete<{ Params: { id: number } }>('/notes/:id', {
    preHandler: app.authenticate,
    schema: { params: idParams }
  }, async (request, reply) => {
    const { rowCount } = await withPg(() => app.pg.query(
      `DELETE FROM ${t.notes} WHERE id = $1 AND user_id = $2`, [request.params.id, request.user.sub]))
    if (rowCount === 0) return reply.code(404).send({ statusCode: 404, error: 'Not Found', code: 'NOTE_NOT_FOUND', message: `note ${request.params.id} not found`, requestId: request.id })
    return reply.code(204).send()
  })
}

import { randomBytes } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { InvalidInput, NotFound } from '../../domain/errors.js';
import type { WebhookDelivery, WebhookStore } from '../../store/webhooks.js';
import { type WebhookUrlPolicy, webhookHostProblem } from '../../webhook-target.js';
import { adminOnly } from '../auth.js';
import { errorResponses, UserIdParams } from '../schemas.js';

export interface WebhookRouteDeps {
  adminKey: string;
  webhooks: WebhookStore;
  /** Config.webhookUrls. */
  webhookUrls: WebhookUrlPolicy;
}

const DeliveryJson = Type.Object({
  delivery_id: Type.String(),
  event_type: Type.String(),
  status: Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')]),
  attempts: Type.Integer(),
  last_status_code: Type.Union([Type.Integer(), Type.Null()]),
  last_error: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String(),
  last_attempt_at: Type.Union([Type.String(), Type.Null()]),
  delivered_at: Type.Union([Type.String(), Type.Null()]),
});

function deliveryJson(d: WebhookDelivery) {
  return {
    delivery_id: d.delivery_id,
    event_type: d.event_type,
    status: d.status,
    attempts: d.attempts,
    last_status_code: d.last_status_code,
    last_error: d.last_error,
    created_at: d.created_at.toISOString(),
    last_attempt_at: d.last_attempt_at?.toISOString() ?? null,
    delivered_at: d.delivered_at?.toISOString() ?? null,
  };
}

/**
 * The webhook URL: absolute http(s) without credentials, and allowed by WEBHOOK_URLS (https to a
 * public address by default; its host's name resolved now, and again at every delivery).
 */
async function checkUrl(raw: string, policy: WebhookUrlPolicy): Promise<string> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new InvalidInput('url must be an absolute http:// or https:// URL');
  }
  const problem = await webhookHostProblem(url, policy);
  if (problem) throw new InvalidInput(problem);
  return url.toString();
}

/** Owner webhooks (admin key): where meeting and calendar events are POSTed, and their deliveries. */
export const webhookRoutes: FastifyPluginAsyncTypebox<WebhookRouteDeps> = async (
  app,
  { adminKey, webhooks, webhookUrls },
) => {
  adminOnly(app, adminKey);

  app.put(
    '/api/users/:user_id/webhook',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Set the owner’s webhook; without a secret one is generated and returned once',
        params: UserIdParams,
        body: Type.Object(
          {
            url: Type.String({ minLength: 1, maxLength: 2000 }),
            secret: Type.Optional(Type.String({ minLength: 16, maxLength: 200 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            success: Type.Literal(true),
            user_id: Type.String(),
            url: Type.String(),
            secret: Type.Optional(Type.String()),
            events: Type.Array(Type.String()),
          }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const url = await checkUrl(req.body.url, webhookUrls);
      const generated = req.body.secret === undefined;
      const secret = req.body.secret ?? `whsec_${randomBytes(32).toString('base64url')}`;
      await webhooks.put(req.params.user_id, url, secret);
      return {
        success: true as const,
        user_id: req.params.user_id,
        url,
        ...(generated ? { secret } : {}),
        events: ['meeting.booked', 'meeting.rescheduled', 'meeting.cancelled', 'calendar.revoked'],
      };
    },
  );

  app.get(
    '/api/users/:user_id/webhook',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'The owner’s webhook (the secret is never shown again)',
        params: UserIdParams,
        response: {
          200: Type.Object({
            success: Type.Literal(true),
            user_id: Type.String(),
            url: Type.String(),
            created_at: Type.String(),
            updated_at: Type.String(),
          }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const hook = await webhooks.get(req.params.user_id);
      if (!hook) throw new NotFound(`No webhook for ${req.params.user_id}`);
      return {
        success: true as const,
        user_id: hook.userId,
        url: hook.url,
        created_at: hook.createdAt.toISOString(),
        updated_at: hook.updatedAt.toISOString(),
      };
    },
  );

  app.delete(
    '/api/users/:user_id/webhook',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'Remove the owner’s webhook',
        params: UserIdParams,
        response: { 200: Type.Object({ success: Type.Literal(true) }), ...errorResponses },
      },
    },
    async (req) => {
      if (!(await webhooks.delete(req.params.user_id)))
        throw new NotFound(`No webhook for ${req.params.user_id}`);
      return { success: true as const };
    },
  );

  app.get(
    '/api/users/:user_id/webhook/deliveries',
    {
      schema: {
        tags: ['webhooks'],
        summary: 'The owner’s webhook deliveries, newest first: status, attempts, last error',
        params: UserIdParams,
        querystring: Type.Object({ limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }) }),
        response: {
          200: Type.Object({ success: Type.Literal(true), deliveries: Type.Array(DeliveryJson) }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const list = await webhooks.list(req.params.user_id, req.query.limit);
      return { success: true as const, deliveries: list.map(deliveryJson) };
    },
  );
};

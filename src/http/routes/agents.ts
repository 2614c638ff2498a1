import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { type Agent, assertTimeZone, MEETING_DURATION } from '../../domain/agent.js';
import { assertUserId } from '../../domain/calendar-connection.js';
import { InvalidInput, NotFound } from '../../domain/errors.js';
import type { AgentStore } from '../../store/agents.js';
import { requireAdmin } from '../auth.js';
import { errorResponses, IdString, UserIdParams } from '../schemas.js';

export interface AgentRouteDeps {
  adminKey: string;
  agents: AgentStore;
}

const AgentBody = Type.Object({
  agent_id: Type.String(),
  user_id: Type.String(),
  name: Type.String(),
  system_prompt: Type.String(),
  timezone: Type.String(),
  model: Type.Union([Type.String(), Type.Null()]),
  meeting_duration_minutes: Type.Integer(),
  created_at: Type.String(),
  updated_at: Type.String(),
});

const editable = {
  name: Type.String({ minLength: 1, maxLength: 200 }),
  system_prompt: Type.String({ maxLength: 20_000 }),
  timezone: Type.String({ minLength: 1, maxLength: 100, description: 'IANA zone, e.g. Europe/Berlin' }),
  model: Type.Union([Type.String({ minLength: 1, maxLength: 100 }), Type.Null()]),
  meeting_duration_minutes: Type.Integer({ minimum: MEETING_DURATION.min, maximum: MEETING_DURATION.max }),
};

export function agentJson(a: Agent) {
  return {
    agent_id: a.agentId,
    user_id: a.userId,
    name: a.name,
    system_prompt: a.systemPrompt,
    timezone: a.timezone,
    model: a.model,
    meeting_duration_minutes: a.meetingDurationMinutes,
    created_at: a.createdAt.toISOString(),
    updated_at: a.updatedAt.toISOString(),
  };
}

/** Owner API for agents (admin key). */
export const agentRoutes: FastifyPluginAsyncTypebox<AgentRouteDeps> = async (app, { adminKey, agents }) => {
  // onRequest: credentials are checked before any validation, so a caller without the key learns
  // nothing about the routes' schemas.
  app.addHook('onRequest', requireAdmin(adminKey));

  app.post(
    '/api/agents',
    {
      schema: {
        tags: ['agents'],
        summary: 'Create an AI chat agent for an owner',
        body: Type.Object(
          {
            user_id: Type.String({ minLength: 1, maxLength: 50 }),
            name: editable.name,
            system_prompt: Type.Optional(editable.system_prompt),
            timezone: Type.Optional(editable.timezone),
            model: Type.Optional(editable.model),
            meeting_duration_minutes: Type.Optional(editable.meeting_duration_minutes),
          },
          { additionalProperties: false },
        ),
        response: { 201: AgentBody, ...errorResponses },
      },
    },
    async (req, reply) => {
      const b = req.body;
      assertUserId(b.user_id);
      if (b.timezone !== undefined) assertTimeZone(b.timezone);
      if (b.name.trim() === '') throw new InvalidInput('name must not be blank');
      const agent = await agents.create({
        userId: b.user_id,
        name: b.name.trim(),
        systemPrompt: b.system_prompt,
        timezone: b.timezone,
        model: b.model,
        meetingDurationMinutes: b.meeting_duration_minutes,
      });
      return reply.code(201).send(agentJson(agent));
    },
  );

  const AgentParams = Type.Object({ agent_id: IdString });

  app.get(
    '/api/agents/:agent_id',
    {
      schema: {
        tags: ['agents'],
        summary: 'One agent',
        params: AgentParams,
        response: { 200: AgentBody, ...errorResponses },
      },
    },
    async (req) => {
      const agent = await agents.get(req.params.agent_id);
      if (!agent) throw new NotFound(`No agent ${req.params.agent_id}`);
      return agentJson(agent);
    },
  );

  app.patch(
    '/api/agents/:agent_id',
    {
      schema: {
        tags: ['agents'],
        summary: 'Change an agent',
        params: AgentParams,
        body: Type.Object(
          {
            name: Type.Optional(editable.name),
            system_prompt: Type.Optional(editable.system_prompt),
            timezone: Type.Optional(editable.timezone),
            model: Type.Optional(editable.model),
            meeting_duration_minutes: Type.Optional(editable.meeting_duration_minutes),
          },
          { additionalProperties: false, minProperties: 1 },
        ),
        response: { 200: AgentBody, ...errorResponses },
      },
    },
    async (req) => {
      const b = req.body;
      if (b.timezone !== undefined) assertTimeZone(b.timezone);
      if (b.name !== undefined && b.name.trim() === '') throw new InvalidInput('name must not be blank');
      const agent = await agents.update(req.params.agent_id, {
        name: b.name?.trim(),
        systemPrompt: b.system_prompt,
        timezone: b.timezone,
        model: b.model,
        meetingDurationMinutes: b.meeting_duration_minutes,
      });
      if (!agent) throw new NotFound(`No agent ${req.params.agent_id}`);
      return agentJson(agent);
    },
  );

  app.get(
    '/api/users/:user_id/agents',
    {
      schema: {
        tags: ['agents'],
        summary: 'An owner’s agents',
        params: UserIdParams,
        querystring: Type.Object({
          limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
          after: Type.Optional(IdString),
        }),
        response: {
          200: Type.Object({ success: Type.Literal(true), agents: Type.Array(AgentBody) }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const list = await agents.listByUser(req.params.user_id, req.query.limit, req.query.after);
      return { success: true as const, agents: list.map(agentJson) };
    },
  );
};

import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { type Agent, MEETING_DURATION, zoneNameInput } from '../../domain/agent.js';
import {
  BOOKING_SETTING_LIMITS,
  type BookingSettings,
  DEFAULT_BOOKING_SETTINGS,
  leavesBookableTime,
  parseWorkingHours,
} from '../../domain/availability.js';
import { assertUserId } from '../../domain/calendar-connection.js';
import { InvalidInput, NotFound } from '../../domain/errors.js';
import type { AgentStore } from '../../store/agents.js';
import { adminOnly } from '../auth.js';
import { errorResponses, IdString, UserIdParams } from '../schemas.js';

export interface AgentRouteDeps {
  adminKey: string;
  agents: AgentStore;
  /** The service's MIN_NOTICE_MINUTES and BOOKING_HORIZON_DAYS: what an agent's null settings mean. */
  bookingDefaults: { minNoticeMinutes: number; horizonDays: number };
}

const UNBOOKABLE =
  'min_notice_minutes must be shorter than horizon_days (the service defaults standing in for those not set), or no time could be booked';

const AgentBody = Type.Object({
  agent_id: Type.String(),
  user_id: Type.String(),
  name: Type.String(),
  system_prompt: Type.String(),
  timezone: Type.String(),
  model: Type.Union([Type.String(), Type.Null()]),
  meeting_duration_minutes: Type.Integer(),
  working_hours: Type.Union([
    Type.Record(Type.String(), Type.Array(Type.Object({ start: Type.String(), end: Type.String() }))),
    Type.Null(),
  ]),
  buffer_minutes: Type.Integer(),
  min_notice_minutes: Type.Union([Type.Integer(), Type.Null()]),
  horizon_days: Type.Union([Type.Integer(), Type.Null()]),
  created_at: Type.String(),
  updated_at: Type.String(),
});

const editable = {
  name: Type.String({ minLength: 1, maxLength: 200 }),
  system_prompt: Type.String({ maxLength: 20_000 }),
  timezone: Type.String({ minLength: 1, maxLength: 100, description: 'IANA zone, e.g. Europe/Berlin' }),
  model: Type.Union([Type.String({ minLength: 1, maxLength: 100 }), Type.Null()]),
  meeting_duration_minutes: Type.Integer({ minimum: MEETING_DURATION.min, maximum: MEETING_DURATION.max }),
  working_hours: Type.Union(
    [
      Type.Record(
        Type.String({ maxLength: 20 }),
        Type.Array(
          Type.Object(
            { start: Type.String({ maxLength: 5 }), end: Type.String({ maxLength: 5 }) },
            { additionalProperties: false },
          ),
          { maxItems: 6 },
        ),
        { maxProperties: 7 },
      ),
      Type.Null(),
    ],
    {
      description:
        'Open ranges per weekday in the agent’s zone, e.g. {"monday":[{"start":"09:00","end":"17:00"}]}; absent weekdays are closed; null = any time',
    },
  ),
  buffer_minutes: Type.Integer({
    minimum: BOOKING_SETTING_LIMITS.bufferMinutes.min,
    maximum: BOOKING_SETTING_LIMITS.bufferMinutes.max,
    description: 'Free time kept before and after every meeting',
  }),
  min_notice_minutes: Type.Union([
    Type.Integer({
      minimum: BOOKING_SETTING_LIMITS.minNoticeMinutes.min,
      maximum: BOOKING_SETTING_LIMITS.minNoticeMinutes.max,
    }),
    Type.Null(),
  ]),
  horizon_days: Type.Union([
    Type.Integer({
      minimum: BOOKING_SETTING_LIMITS.horizonDays.min,
      maximum: BOOKING_SETTING_LIMITS.horizonDays.max,
    }),
    Type.Null(),
  ]),
};

interface SettingsBody {
  working_hours?: unknown;
  buffer_minutes?: number | undefined;
  min_notice_minutes?: number | null | undefined;
  horizon_days?: number | null | undefined;
}

/** The booking settings a body sets (validated: weekdays, HH:MM, ranges in order). */
function settingsFrom(b: SettingsBody): Partial<BookingSettings> {
  return {
    ...(b.working_hours !== undefined
      ? { workingHours: b.working_hours === null ? null : parseWorkingHours(b.working_hours) }
      : {}),
    ...(b.buffer_minutes !== undefined ? { bufferMinutes: b.buffer_minutes } : {}),
    ...(b.min_notice_minutes !== undefined ? { minNoticeMinutes: b.min_notice_minutes } : {}),
    ...(b.horizon_days !== undefined ? { horizonDays: b.horizon_days } : {}),
  };
}

export function agentJson(a: Agent) {
  const booking = a.booking ?? DEFAULT_BOOKING_SETTINGS;
  return {
    agent_id: a.agentId,
    user_id: a.userId,
    name: a.name,
    system_prompt: a.systemPrompt,
    timezone: a.timezone,
    model: a.model,
    meeting_duration_minutes: a.meetingDurationMinutes,
    working_hours: (booking.workingHours ?? null) as Record<
      string,
      Array<{ start: string; end: string }>
    > | null,
    buffer_minutes: booking.bufferMinutes,
    min_notice_minutes: booking.minNoticeMinutes,
    horizon_days: booking.horizonDays,
    created_at: a.createdAt.toISOString(),
    updated_at: a.updatedAt.toISOString(),
  };
}

/** Every editable field but the name, optional on create and on patch alike. */
const optionalFields = {
  system_prompt: Type.Optional(editable.system_prompt),
  timezone: Type.Optional(editable.timezone),
  model: Type.Optional(editable.model),
  meeting_duration_minutes: Type.Optional(editable.meeting_duration_minutes),
  working_hours: Type.Optional(editable.working_hours),
  buffer_minutes: Type.Optional(editable.buffer_minutes),
  min_notice_minutes: Type.Optional(editable.min_notice_minutes),
  horizon_days: Type.Optional(editable.horizon_days),
};

/** Owner API for agents (admin key). */
export const agentRoutes: FastifyPluginAsyncTypebox<AgentRouteDeps> = async (
  app,
  { adminKey, agents, bookingDefaults },
) => {
  // onRequest: credentials are checked before any validation, so a caller without the key learns
  // nothing about the routes' schemas.
  adminOnly(app, adminKey);

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
            ...optionalFields,
          },
          { additionalProperties: false },
        ),
        response: { 201: AgentBody, ...errorResponses },
      },
    },
    async (req, reply) => {
      const b = req.body;
      assertUserId(b.user_id);
      const timezone = b.timezone === undefined ? undefined : zoneNameInput(b.timezone);
      if (b.name.trim() === '') throw new InvalidInput('name must not be blank');
      const booking = settingsFrom(b);
      const notice = booking.minNoticeMinutes ?? bookingDefaults.minNoticeMinutes;
      if (!leavesBookableTime(notice, booking.horizonDays ?? bookingDefaults.horizonDays)) {
        throw new InvalidInput(UNBOOKABLE);
      }
      const agent = await agents.create({
        booking,
        userId: b.user_id,
        name: b.name.trim(),
        systemPrompt: b.system_prompt,
        timezone,
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
            ...optionalFields,
          },
          { additionalProperties: false, minProperties: 1 },
        ),
        response: { 200: AgentBody, ...errorResponses },
      },
    },
    async (req) => {
      const b = req.body;
      const timezone = b.timezone === undefined ? undefined : zoneNameInput(b.timezone);
      if (b.name !== undefined && b.name.trim() === '') throw new InvalidInput('name must not be blank');
      const booking = settingsFrom(b);
      const agent = await agents.update(
        req.params.agent_id,
        {
          booking,
          name: b.name?.trim(),
          systemPrompt: b.system_prompt,
          timezone,
          model: b.model,
          meetingDurationMinutes: b.meeting_duration_minutes,
        },
        bookingDefaults,
      );
      if (!agent) {
        // Not updated: no such agent, or the update would leave it no bookable time (nothing changed).
        if (await agents.get(req.params.agent_id)) throw new InvalidInput(UNBOOKABLE);
        throw new NotFound(`No agent ${req.params.agent_id}`);
      }
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

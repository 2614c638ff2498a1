import { type Kysely, type Selectable, sql } from 'kysely';
import type { Agent } from '../domain/agent.js';
import { type BookingSettings, parseWorkingHours } from '../domain/availability.js';
import { ianaZoneName } from '../domain/time.js';
import { newId } from './ids.js';
import type { DB } from './schema.js';
import { type BookingDB, widen } from './schema-booking.js';

export interface NewAgent {
  userId: string;
  name: string;
  systemPrompt?: string | undefined;
  timezone?: string | undefined;
  model?: string | null | undefined;
  meetingDurationMinutes?: number | undefined;
  booking?: Partial<BookingSettings> | undefined;
}

export type AgentPatch = Partial<Omit<NewAgent, 'userId'>>;

/** An agent row's booking settings (also read by the worker's claim, selectWork, which joins the agent). */
export function bookingOf(
  r: Pick<
    Selectable<BookingDB['agents']>,
    'working_hours' | 'buffer_minutes' | 'min_notice_minutes' | 'horizon_days'
  >,
): BookingSettings {
  let workingHours: BookingSettings['workingHours'] = null;
  if (r.working_hours !== null && r.working_hours !== undefined) {
    try {
      const raw = typeof r.working_hours === 'string' ? JSON.parse(r.working_hours) : r.working_hours;
      workingHours = parseWorkingHours(raw);
    } catch (err) {
      // Stored data, not the caller's input: a server error (500), not the validation's 400.
      throw new Error(`the agent's stored working_hours cannot be read: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  return {
    workingHours,
    bufferMinutes: r.buffer_minutes ?? 0,
    minNoticeMinutes: r.min_notice_minutes ?? null,
    horizonDays: r.horizon_days ?? null,
  };
}

function bookingColumns(b: Partial<BookingSettings> | undefined) {
  if (!b) return {};
  return {
    ...(b.workingHours !== undefined
      ? { working_hours: b.workingHours === null ? null : JSON.stringify(b.workingHours) }
      : {}),
    ...(b.bufferMinutes !== undefined ? { buffer_minutes: b.bufferMinutes } : {}),
    ...(b.minNoticeMinutes !== undefined ? { min_notice_minutes: b.minNoticeMinutes } : {}),
    ...(b.horizonDays !== undefined ? { horizon_days: b.horizonDays } : {}),
  };
}

/** An agents row as the domain's Agent (also for the worker's claim, which reads the row joined). */
export const toAgent = (r: Selectable<BookingDB['agents']>): Agent => ({
  agentId: r.agent_id,
  userId: r.user_id,
  name: r.name,
  systemPrompt: r.system_prompt,
  // Spelled as Google wants it, also for rows saved before names were (any casing was accepted).
  timezone: ianaZoneName(r.timezone) ?? r.timezone,
  model: r.model,
  meetingDurationMinutes: r.meeting_duration_minutes,
  booking: bookingOf(r),
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export class AgentStore {
  private readonly db: Kysely<BookingDB>;
  constructor(db: Kysely<DB>) {
    this.db = widen(db);
  }

  /** The agent's booking settings (defaults when the agent is unknown). */
  async create(a: NewAgent): Promise<Agent> {
    const row = await this.db
      .insertInto('agents')
      .values({
        agent_id: newId('agt'),
        user_id: a.userId,
        name: a.name,
        system_prompt: a.systemPrompt ?? '',
        timezone: a.timezone ?? 'UTC',
        model: a.model ?? null,
        meeting_duration_minutes: a.meetingDurationMinutes ?? 30,
        ...bookingColumns(a.booking),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return toAgent(row);
  }

  async get(agentId: string): Promise<Agent | undefined> {
    const row = await this.db
      .selectFrom('agents')
      .selectAll()
      .where('agent_id', '=', agentId)
      .executeTakeFirst();
    return row ? toAgent(row) : undefined;
  }

  /**
   * Undefined when there is no such agent, or when the agent's notice would then be no shorter than
   * its horizon (leavesBookableTime; each the patch's value, else the stored one, else the service's
   * default from `defaults`): checked on the row as it is updated, so two patches at once (one the
   * notice, one the horizon) cannot together leave no bookable time.
   */
  async update(
    agentId: string,
    patch: AgentPatch,
    defaults: { minNoticeMinutes: number; horizonDays: number },
  ): Promise<Agent | undefined> {
    const set = {
      ...(patch.name !== undefined ? { name: patch.name } : {}),
      ...(patch.systemPrompt !== undefined ? { system_prompt: patch.systemPrompt } : {}),
      ...(patch.timezone !== undefined ? { timezone: patch.timezone } : {}),
      ...(patch.model !== undefined ? { model: patch.model } : {}),
      ...(patch.meetingDurationMinutes !== undefined
        ? { meeting_duration_minutes: patch.meetingDurationMinutes }
        : {}),
      ...bookingColumns(patch.booking),
    };
    const b = patch.booking;
    const notice =
      b?.minNoticeMinutes !== undefined ? sql`${b.minNoticeMinutes}::int` : sql.ref('min_notice_minutes');
    const horizon = b?.horizonDays !== undefined ? sql`${b.horizonDays}::int` : sql.ref('horizon_days');
    const row = await this.db
      .updateTable('agents')
      .set({ ...set, updated_at: sql<Date>`now()` })
      .where('agent_id', '=', agentId)
      // leavesBookableTime, on the row's values after this update.
      .where(
        sql<boolean>`coalesce(${notice}, ${defaults.minNoticeMinutes}::int) < coalesce(${horizon}, ${defaults.horizonDays}::int) * 1440`,
      )
      .returningAll()
      .executeTakeFirst();
    return row ? toAgent(row) : undefined;
  }

  async listByUser(userId: string, limit: number, afterAgentId?: string): Promise<Agent[]> {
    let q = this.db
      .selectFrom('agents')
      .selectAll()
      .where('user_id', '=', userId)
      .orderBy('agent_id')
      .limit(limit);
    if (afterAgentId !== undefined) q = q.where('agent_id', '>', afterAgentId);
    return (await q.execute()).map(toAgent);
  }
}

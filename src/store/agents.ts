import { type Kysely, type Selectable, sql } from 'kysely';
import type { Agent } from '../domain/agent.js';
import { newId } from './ids.js';
import type { AgentTable, DB } from './schema.js';

export interface NewAgent {
  userId: string;
  name: string;
  systemPrompt?: string | undefined;
  timezone?: string | undefined;
  model?: string | null | undefined;
  meetingDurationMinutes?: number | undefined;
}

export type AgentPatch = Partial<Omit<NewAgent, 'userId'>>;

const toAgent = (r: Selectable<AgentTable>): Agent => ({
  agentId: r.agent_id,
  userId: r.user_id,
  name: r.name,
  systemPrompt: r.system_prompt,
  timezone: r.timezone,
  model: r.model,
  meetingDurationMinutes: r.meeting_duration_minutes,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export class AgentStore {
  constructor(private readonly db: Kysely<DB>) {}

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

  async update(agentId: string, patch: AgentPatch): Promise<Agent | undefined> {
    const set = {
      ...(patch.name !== undefined ? { name: patch.name } : {}),
      ...(patch.systemPrompt !== undefined ? { system_prompt: patch.systemPrompt } : {}),
      ...(patch.timezone !== undefined ? { timezone: patch.timezone } : {}),
      ...(patch.model !== undefined ? { model: patch.model } : {}),
      ...(patch.meetingDurationMinutes !== undefined
        ? { meeting_duration_minutes: patch.meetingDurationMinutes }
        : {}),
    };
    const row = await this.db
      .updateTable('agents')
      .set({ ...set, updated_at: sql<Date>`now()` })
      .where('agent_id', '=', agentId)
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

/**
 * A claimed message whose row cannot be read (its agent's stored working hours corrupt): retried like
 * a failed attempt, so a repair meanwhile lets it run, and answered with the model fallback on its last
 * attempt, so its conversation moves on. JOB_RETRY_LIMIT=1: the second run is the last.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { describe, expect, it, onTestFinished } from 'vitest';
import { MessageStore } from '../../src/store/messages.js';
import { createUnreadableAnswer } from '../../src/worker/process-message.js';
import { useStack } from '../helpers/stack.js';

const s = useStack({ JOB_RETRY_LIMIT: '1' });

async function corruptChat() {
  const userId = `unread-${randomBytes(5).toString('hex')}`;
  await s.connectOwner(userId);
  const agent = await s.createAgent({ user_id: userId, name: 'Acme', timezone: 'Asia/Kolkata' });
  const c = await s.openConversation(agent.agent_id, { customer_name: 'Sid' });
  // Not a working-hours object: the claim cannot build the agent's settings from it.
  await sql`UPDATE agents SET working_hours = '{"monday": "all day"}'::jsonb
             WHERE agent_id = ${agent.agent_id}`.execute(s.app.database.db);
  return { agentId: agent.agent_id as string, ...c };
}

const attemptsOf = async (conversationId: string) =>
  (
    await sql<{ attempts: number; status: string }>`
      SELECT attempts, status FROM messages WHERE conversation_id = ${conversationId} AND role = 'customer'`.execute(
      s.app.database.db,
    )
  ).rows[0];

describe('a claimed message that cannot be read', () => {
  it('is retried, then answered with the fallback on its last attempt; the conversation goes on', async () => {
    const c = await corruptChat();
    s.openai.responder = () => ({ content: 'unused' });
    await s.send(c.conversation_id, c.customer_token, 'hello');
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 20_000);
    expect(list.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual([
      s.app.config.llmErrorMessage,
    ]);
    expect(await attemptsOf(c.conversation_id)).toEqual({ attempts: 2, status: 'failed' });
    expect(s.openai.requests.length).toBe(0);
    const m = await s.app.http.inject({ url: '/metrics', headers: s.admin });
    expect(m.body).toMatch(/message_jobs_total\{outcome="failed"\} 1/);
    // Reading that agent over HTTP is a server error (stored data), not the caller's bad input.
    const opened = await s.app.http.inject({
      method: 'POST',
      url: `/api/agents/${c.agentId}/conversations`,
      payload: {},
    });
    expect(opened.statusCode).toBe(500);
    expect(opened.json()).toEqual({ success: false, error: 'Internal server error' });
  }, 30_000);

  it('runs normally once repaired before its last attempt', async () => {
    const c = await corruptChat();
    s.openai.responder = () => ({ content: 'Hello! How can I help?' });
    s.holdRetries(true); // repaired between the two attempts
    const messageId = await s.send(c.conversation_id, c.customer_token, 'hello');
    await s.firstAttemptFailed(messageId);
    await sql`UPDATE agents SET working_hours = NULL WHERE agent_id = ${c.agentId}`.execute(
      s.app.database.db,
    );
    await s.retryNow(messageId);
    const list = await s.waitForReplies(c.conversation_id, c.customer_token, 1, 20_000);
    expect(list.filter((m) => m.role === 'assistant').map((m) => m.content)).toEqual([
      'Hello! How can I help?',
    ]);
    expect(await attemptsOf(c.conversation_id)).toEqual({ attempts: 2, status: 'answered' });
  }, 30_000);

  it('its fallback is stored only under the current claim: a run that stalled past its claim closes nothing', async () => {
    const c = await corruptChat();
    s.holdRetries(true); // the first attempt fails and waits; the test plays the stalled last run
    onTestFinished(() => s.holdRetries(false));
    const messageId = await s.send(c.conversation_id, c.customer_token, 'hello');
    await s.firstAttemptFailed(messageId);
    // Another run has claimed the message since (claim 2), as after a stalled run's claim lapsed.
    await sql`UPDATE messages SET attempts = 2, claimed_until = now() + interval '1 minute', run_after = NULL
               WHERE message_id = ${messageId}`.execute(s.app.database.db);
    const answer = createUnreadableAnswer({
      db: s.app.database.db,
      messages: new MessageStore(s.app.database.db),
      llmErrorMessage: s.app.config.llmErrorMessage,
    });
    const message = { messageId, conversationId: c.conversation_id };
    await answer({ ...message, claim: 1 }, new Error('stale'));
    expect(await attemptsOf(c.conversation_id)).toEqual({ attempts: 2, status: 'pending' });
    await answer({ ...message, claim: 2 }, new Error('current'));
    expect(await attemptsOf(c.conversation_id)).toEqual({ attempts: 2, status: 'failed' });
  });
});

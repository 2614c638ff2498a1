import { sql } from 'kysely';
import type { ScriptedReply } from '../emulators/openai.js';
import type { Stack } from './stack.js';

/**
 * A message's first run stalls in its model call (as a process whose event loop stopped would) until
 * released, while its claim is made to lapse and the dispatcher is woken: a second run claims the
 * message again and gets `second`. Once released, the first run gets `first`. Sets the stack's
 * model responder.
 */
export function stallFirstRun(
  s: Stack,
  conversationId: string,
  first: () => ScriptedReply,
  second: () => ScriptedReply,
): { release: () => void; calls: () => number } {
  let calls = 0;
  let release: () => void = () => {};
  const held = new Promise<void>((r) => {
    release = r;
  });
  s.openai.responder = async () => {
    calls++;
    if (calls > 1) return second();
    const db = s.app.database.db;
    const { attempts } = await db
      .selectFrom('messages')
      .select('attempts')
      .where('conversation_id', '=', conversationId)
      .where('status', '=', 'pending')
      .executeTakeFirstOrThrow();
    // This run's claim only (its attempt number): never a later run's.
    const lapse = async () => {
      await db
        .updateTable('messages')
        .set({ claimed_until: new Date(Date.now() - 1000) })
        .where('conversation_id', '=', conversationId)
        .where('status', '=', 'pending')
        .where('attempts', '=', attempts)
        .execute();
      await sql`SELECT pg_notify(agent_meetings_channel('agent_meetings_customer_messages'), ${conversationId})`.execute(
        db,
      );
    };
    await lapse();
    // This run's heartbeat may extend the claim again before another run claims it (a slow machine
    // widens that window): lapsed again until the second run has begun.
    const deadline = Date.now() + 30_000;
    while (calls === 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      if (calls === 1) await lapse();
    }
    await held;
    return first();
  };
  return { release: () => release(), calls: () => calls };
}

import type { Chat, Harness, ScenarioContext } from '../harness.js';
import { CONFIRMATION_PREFIX } from '../model.js';

export interface BookingCheck {
  requested: number;
  events: number;
  meetings: number;
  confirmations: number;
  duplicates: number;
  lost: number;
  /** Owners whose counts differ, or whose event ids differ from the meeting rows'. */
  problems: string[];
}

/**
 * Per owner: events on the emulated calendar (not cancelled) == meeting rows == confirmation replies
 * == bookings requested, and the meeting rows name exactly the calendar's events.
 */
export async function checkBookings(
  h: Harness,
  chats: Chat[],
  perConversation: number,
): Promise<BookingCheck> {
  const byOwner = new Map<string, string[]>();
  for (const c of chats) byOwner.set(c.userId, [...(byOwner.get(c.userId) ?? []), c.conversationId]);
  const out: BookingCheck = {
    requested: 0,
    events: 0,
    meetings: 0,
    confirmations: 0,
    duplicates: 0,
    lost: 0,
    problems: [],
  };
  for (const [userId, conversations] of byOwner) {
    const requested = conversations.length * perConversation;
    const events = h.google.events(`${userId}@owner.test`).filter((e) => e.status !== 'cancelled');
    const meetingRows = await h.query<{ google_event_id: string }>(
      'SELECT google_event_id FROM meetings WHERE user_id = $1',
      [userId],
    );
    const confirmations = await h.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM messages
        WHERE conversation_id = ANY($1) AND role = 'assistant' AND starts_with(content, $2)`,
      [conversations, CONFIRMATION_PREFIX],
    );
    const confirmed = confirmations[0]?.n ?? 0;
    out.requested += requested;
    out.events += events.length;
    out.meetings += meetingRows.length;
    out.confirmations += confirmed;
    out.duplicates +=
      Math.max(0, events.length - requested) +
      Math.max(0, meetingRows.length - requested) +
      Math.max(0, confirmed - requested);
    out.lost += Math.max(0, requested - Math.min(events.length, meetingRows.length, confirmed));
    const eventIds = new Set(events.map((e) => e.id));
    const rowIds = new Set(meetingRows.map((m) => m.google_event_id));
    const sameIds = eventIds.size === rowIds.size && [...eventIds].every((id) => id && rowIds.has(id));
    if (
      events.length !== requested ||
      meetingRows.length !== requested ||
      confirmed !== requested ||
      !sameIds
    ) {
      out.problems.push(
        `${userId}: requested ${requested}, events ${events.length}, meetings ${meetingRows.length}, ` +
          `confirmations ${confirmed}${sameIds ? '' : ', event ids differ from the meeting rows'}`,
      );
    }
  }
  return out;
}

/** events.insert calls per booking (by the deterministic event id). */
export function insertsPerBooking(h: Harness): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of h.google.requests) {
    if (r.op !== 'events.insert') continue;
    const id = (r.body as { id?: unknown } | undefined)?.id;
    if (typeof id === 'string') counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

export function applyBookingCheck(ctx: ScenarioContext, check: BookingCheck): void {
  ctx.extraDuplicates += check.duplicates;
  ctx.extraLost += check.lost;
  ctx.note(
    `bookings ${check.requested}: events ${check.events} = meetings ${check.meetings} = confirmations ${check.confirmations}`,
  );
  for (const p of check.problems) ctx.fail(`booking mismatch: ${p}`);
}

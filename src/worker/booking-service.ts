import type { Logger } from 'pino';
import {
  type BookingLimits,
  bookingKey,
  eventTimeZone,
  googleEventIdFor,
  toOffsetIso,
  validateBookingAction,
} from '../domain/booking-request.js';
import type { CalendarGateway } from '../domain/calendar-gateway.js';
import { CalendarNotConnected, Upstream } from '../domain/errors.js';
import { bookingTexts, meetingConfirmation, withProse } from '../domain/messages.js';
import { friendlyTime } from '../domain/time.js';
import type { MeetingStore, NewMeeting } from '../store/meetings.js';
import type { MessageWork } from '../store/messages.js';
import type { ActionResponder, Reply } from './process-message.js';

export interface BookingServiceDeps {
  calendar: CalendarGateway;
  meetings: MeetingStore;
  limits: BookingLimits & { maxBookingsPerConversation: number };
  meetingErrorMessage: string;
  now: () => Date;
  onOutcome?: (outcome: string) => void;
}

/**
 * Turns the model's booking actions into real meetings (the seed's steps 5–11).
 *
 * Never twice: each action gets an idempotency key from the customer message and the action; the
 * Google event id is derived from it (a repeated insert answers 409 and we fetch the event), and
 * the meeting row (unique key and event id) commits in the same transaction as the confirmation.
 * The confirmation is built from Google's answer, never from the model's words.
 */
export class BookingService implements ActionResponder {
  constructor(private readonly deps: BookingServiceDeps) {}

  async respond(work: MessageWork, actions: unknown[], prose: string, log: Logger): Promise<Reply> {
    const texts: string[] = [];
    const persists: NonNullable<Reply['persist']>[] = [];
    // The model may state one booking twice in an answer (a tool call and the same JSON in its text,
    // or a repeated array item): each distinct request is booked once.
    const requested = new Set<string>();
    for (const [index, action] of actions.entries()) {
      const result = await this.#bookOne(work, action, index, log, persists.length, requested);
      if (result.duplicate) continue;
      texts.push(result.text);
      if (result.persist) persists.push(result.persist);
      if (result.stop) break;
    }
    return {
      text: withProse(prose, texts.join('\n\n')),
      persist: persists.length
        ? async (trx) => {
            for (const p of persists) await p(trx);
          }
        : undefined,
    };
  }

  async #bookOne(
    work: MessageWork,
    action: unknown,
    index: number,
    log: Logger,
    bookedInThisReply: number,
    requested: Set<string>,
  ): Promise<{ text: string; persist?: Reply['persist']; stop?: boolean; duplicate?: boolean }> {
    const { agent, conversation, message } = work;
    const now = this.deps.now();
    const checked = validateBookingAction(action, this.deps.limits, now);
    if (!checked.ok) {
      this.deps.onOutcome?.('invalid');
      log.info({ problems: checked.problems }, 'booking action rejected');
      return { text: bookingTexts.invalid(checked.problems) };
    }
    const request = checked.request;
    const sameRequest = bookingKey(message.messageId, -1, request); // the key without the position
    if (requested.has(sameRequest)) {
      log.info({ index }, 'booking action repeats an earlier one in the same answer; booked once');
      return { text: '', duplicate: true };
    }
    requested.add(sameRequest);
    const key = bookingKey(message.messageId, index, request);

    // An earlier attempt of this job may already have created the Google event (its reply did not
    // commit, so no meeting row counts it yet): the same key makes the insert below find it again.
    const upcoming =
      (await this.deps.meetings.countUpcoming(conversation.conversationId, now)) + bookedInThisReply;
    if (upcoming >= this.deps.limits.maxBookingsPerConversation) {
      this.deps.onOutcome?.('limit');
      return { text: bookingTexts.tooManyBookings(this.deps.limits.maxBookingsPerConversation), stop: true };
    }

    const zone = eventTimeZone(request, agent.timezone);
    const end = new Date(request.start.getTime() + agent.meetingDurationMinutes * 60_000);
    const eventId = googleEventIdFor(key);
    let created: Awaited<ReturnType<CalendarGateway['createEvent']>>;
    try {
      created = await this.deps.calendar.createEvent(agent.userId, {
        eventId,
        conferenceRequestId: `am-${key.slice(0, 32)}`,
        summary: request.title,
        description: describeBooking(request.name ?? conversation.customerName, request.email, agent.name),
        startDateTime: toOffsetIso(request.start, request.offsetMinutes),
        endDateTime: toOffsetIso(end, request.offsetMinutes),
        timeZone: zone,
        attendees: [request.email, ...request.participants],
      });
    } catch (err) {
      if (err instanceof CalendarNotConnected) {
        this.deps.onOutcome?.(err.reason === 'revoked' ? 'revoked' : 'not_connected');
        log.warn({ user_id: agent.userId, reason: err.reason }, 'cannot book: calendar not connected');
        return { text: this.deps.meetingErrorMessage, stop: true };
      }
      if (err instanceof Upstream && !err.retryable) {
        this.deps.onOutcome?.('google_error');
        log.error({ err }, 'Google refused the booking');
        return { text: this.deps.meetingErrorMessage, stop: true };
      }
      throw err; // retryable: the job runs again and books with the same key
    }
    this.deps.onOutcome?.(created.existed ? 'booked_existing' : 'booked');
    log.info(
      { event_id: created.eventId, conference: created.conferenceStatus, existed: created.existed },
      'meeting booked on Google Calendar',
    );
    const meeting: NewMeeting = {
      userId: agent.userId,
      agentId: agent.agentId,
      conversationId: conversation.conversationId,
      messageId: message.messageId,
      idempotencyKey: key,
      googleEventId: created.eventId,
      title: request.title,
      customerName: request.name ?? conversation.customerName,
      customerEmail: request.email,
      participants: request.participants,
      meetingTime: request.start,
      durationMinutes: agent.meetingDurationMinutes,
      timezone: zone ?? agent.timezone,
      meetLink: created.meetLink,
      htmlLink: created.htmlLink,
    };
    const when = request.friendlyTime ?? friendlyTime(request.start, agent.timezone);
    return {
      text: meetingConfirmation(when, created.meetLink),
      persist: (trx) => this.deps.meetings.insert(trx, meeting),
    };
  }
}

function describeBooking(name: string | null, email: string, agentName: string): string {
  return `Meeting with ${name ? `${name} <${email}>` : email}, booked through the ${agentName} chat assistant.`;
}

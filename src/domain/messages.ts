/**
 * Every text the customer can receive from the system itself (as opposed to the model's prose).
 * The confirmation is the seed's text, word for word.
 */

import type { ConferenceStatus } from './calendar-gateway.js';

/**
 * The confirmation's link line: the Meet link; or, without one, whether the invite will carry one: a
 * conference still being created (`pending`) gets its link into the invite once Google made it, but
 * one Google could not create (`failure`: Meet turned off for the owner's domain, say), or an event
 * without any, has none, and the text must not promise it.
 */
function linkLine(meetLink: string | null, conference: ConferenceStatus | undefined): string {
  if (meetLink) return `🔗 Join here: ${meetLink}`;
  return conference === 'failure' || conference === 'none'
    ? '🔗 No video call link could be created for this meeting.'
    : '🔗 The meeting link is in your calendar invite.';
}

/**
 * The first line of the system's own confirmations below, in any case or spacing: after a check mark
 * (with or without the emoji's variation selector: `✅️` is how many models write it), in markdown
 * emphasis or not; or without one, as a whole line ("Meeting confirmed!"). The model writing one
 * itself (process-message's composeReply) is asked again, never shown. A line that goes on ("Meeting
 * confirmed for Friday at 10, as you asked") and the time and link lines alone are not matched: the
 * model may say them truthfully about a meeting booked earlier in the conversation.
 */
export const OWN_CONFIRMATION = new RegExp(
  [
    String.raw`[✅✔☑][\uFE0E\uFE0F]?[\s*_~#>]*Meeting\s+(?:confirmed|rescheduled|cancell?ed)\b`,
    String.raw`^[\s*_~#>]*Meeting\s+(?:confirmed|rescheduled|cancell?ed)[\s*_~!.]*$`,
  ].join('|'),
  'imu',
);

export function meetingConfirmation(
  friendlyTime: string,
  meetLink: string | null,
  conference?: ConferenceStatus,
): string {
  const link = linkLine(meetLink, conference);
  return `✅ Meeting confirmed!\n\n📅 Meeting scheduled for ${friendlyTime}\n${link}\n\nYou'll receive a calendar invite via email.`;
}

export function withProse(prose: string, systemText: string): string {
  return prose ? `${prose}\n\n${systemText}` : systemText;
}

export const bookingTexts = {
  invalid: (problems: string[]) =>
    `I couldn't book that meeting yet: ${problems.join('; ')}. Could you check and tell me again?`,
  tooManyBookings: (max: number) =>
    `This conversation already has ${max} upcoming meeting${max === 1 ? '' : 's'} booked, which is the most I can book here. ` +
    'If you need a change, please contact the business directly.',
} as const;

/** A reschedule's confirmation, in the seed's style. */
export function rescheduleConfirmation(
  friendlyTime: string,
  meetLink: string | null,
  conference?: ConferenceStatus,
): string {
  const link = linkLine(meetLink, conference);
  return `✅ Meeting rescheduled!\n\n📅 Meeting now scheduled for ${friendlyTime}\n${link}\n\nYou'll receive an updated calendar invite via email.`;
}

/** A cancellation's confirmation, in the seed's style. */
export function cancellationConfirmation(friendlyTime: string): string {
  return `✅ Meeting cancelled.\n\n📅 The meeting scheduled for ${friendlyTime} has been cancelled.\n\nYou'll receive a cancellation email.`;
}

export const availabilityTexts = {
  /** The requested time cannot be booked; `alternatives` are friendly times of real free slots. */
  unavailable: (reason: 'busy' | 'outside_hours', alternatives: string[], hours?: string) => {
    const why =
      reason === 'busy'
        ? 'that time is not available'
        : `that time is outside our working hours${hours ? ` (${hours})` : ''}`;
    if (alternatives.length === 0) {
      return `Sorry, ${why}, and I couldn't find a free time close to it. Could you suggest another day?`;
    }
    return `Sorry, ${why}. The nearest free times are:\n${alternatives.map((a) => `• ${a}`).join('\n')}\n\nWhich one would you like?`;
  },
  noMeeting: () =>
    "I couldn't find an upcoming meeting booked in this conversation to change. If you booked elsewhere, please contact the business directly.",
  unknownMeeting: () =>
    "I couldn't find that meeting among the upcoming meetings booked in this conversation. Could you tell me which one you mean?",
  /** A second, different move of a meeting in one answer: the first stands. */
  movedTwice: () =>
    "I've already moved that meeting once in this reply, so I left it at that time. If you'd like it moved again, just tell me the new time.",
} as const;

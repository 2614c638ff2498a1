import { messageText, type Responder } from '../emulators/openai.js';

/** A customer message starting with this asks the emulated model to book: `book {json action}`. */
export const BOOK_PREFIX = 'book ';
export const BOOKING_ACTION = 'Time_to_121meet';
export const CONFIRMATION_PREFIX = '✅ Meeting confirmed!';

export interface BookingArgs {
  name: string;
  email: string;
  title: string;
  participants: string[];
  meeting_time: string;
  friendly_time: string | null;
}

/**
 * The emulated model used by every scenario: it answers "Answer to: <last customer message>", or,
 * when that message is `book {...}`, calls the booking tool with those arguments (what a real model
 * does once it knows who, when and what).
 */
export const faultModel: Responder = (req) => {
  const lastUser = [...req.messages].reverse().find((m) => m.role === 'user');
  const text = messageText(lastUser?.content);
  if (text.startsWith(BOOK_PREFIX)) {
    const args = JSON.parse(text.slice(BOOK_PREFIX.length)) as BookingArgs;
    return { toolCalls: [{ name: BOOKING_ACTION, arguments: args }] };
  }
  return { content: `Answer to: ${text}` };
};

/** The reply the emulated model gives to a plain message. */
export const echoOf = (customer: string) => `Answer to: ${customer}`;

/** A booking message for `email`, `hoursAhead` from now (whole minutes, with an explicit offset). */
export function bookingMessage(opts: {
  name: string;
  email: string;
  title: string;
  hoursAhead: number;
}): string {
  const at = new Date(Math.ceil((Date.now() + opts.hoursAhead * 3_600_000) / 60_000) * 60_000);
  const args: BookingArgs = {
    name: opts.name,
    email: opts.email,
    title: opts.title,
    participants: [opts.email],
    meeting_time: `${at.toISOString().slice(0, 19)}+00:00`,
    friendly_time: `${at.toISOString().slice(0, 16).replace('T', ' ')} UTC`,
  };
  return `${BOOK_PREFIX}${JSON.stringify(args)}`;
}

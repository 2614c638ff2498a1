import { describe, expect, it } from 'vitest';
import {
  bookingTexts,
  cancellationConfirmation,
  meetingConfirmation,
  OWN_CONFIRMATION,
  rescheduleConfirmation,
  withProse,
} from '../../src/domain/messages.js';

describe('meetingConfirmation', () => {
  it("is the seed's text word for word", () => {
    expect(meetingConfirmation('today at 7 PM IST', 'https://meet.google.com/abc-defg-hij')).toBe(
      "✅ Meeting confirmed!\n\n📅 Meeting scheduled for today at 7 PM IST\n🔗 Join here: https://meet.google.com/abc-defg-hij\n\nYou'll receive a calendar invite via email.",
    );
  });

  it.each([null, ''])('without a link (%j) points to the invite', (link) => {
    expect(meetingConfirmation('Monday, October 6, 2025 at 7:00 PM GMT+5:30', link)).toBe(
      "✅ Meeting confirmed!\n\n📅 Meeting scheduled for Monday, October 6, 2025 at 7:00 PM GMT+5:30\n🔗 The meeting link is in your calendar invite.\n\nYou'll receive a calendar invite via email.",
    );
  });
});

describe('the link line of a confirmation without a link', () => {
  it.each([
    [undefined, '🔗 The meeting link is in your calendar invite.'],
    ['pending', '🔗 The meeting link is in your calendar invite.'],
    ['failure', '🔗 No video call link could be created for this meeting.'],
    ['none', '🔗 No video call link could be created for this meeting.'],
  ] as const)('conference %s: %s', (conference, line) => {
    expect(meetingConfirmation('Monday at 10 AM', null, conference).split('\n')[3]).toBe(line);
    expect(rescheduleConfirmation('Monday at 10 AM', null, conference).split('\n')[3]).toBe(line);
    // A link is shown whatever the status says.
    expect(
      meetingConfirmation('Monday at 10 AM', 'https://meet.google.com/abc-defg-hij', conference),
    ).toContain('🔗 Join here: https://meet.google.com/abc-defg-hij');
  });
});

describe('withProse', () => {
  it('puts the model prose before the system text', () => {
    expect(withProse('Great!', 'SYSTEM')).toBe('Great!\n\nSYSTEM');
    expect(withProse('', 'SYSTEM')).toBe('SYSTEM');
  });
});

describe('bookingTexts', () => {
  it('lists the problems', () => {
    expect(
      bookingTexts.invalid(['the email is missing', 'that time is in the past, please pick another time']),
    ).toBe(
      "I couldn't book that meeting yet: the email is missing; that time is in the past, please pick another time. Could you check and tell me again?",
    );
  });

  it('pluralises the booking limit', () => {
    expect(bookingTexts.tooManyBookings(1)).toContain('already has 1 upcoming meeting booked');
    expect(bookingTexts.tooManyBookings(3)).toContain('already has 3 upcoming meetings booked');
  });
});

describe('OWN_CONFIRMATION', () => {
  it.each([
    ['our own text', meetingConfirmation('Friday at 10 AM', 'https://meet.google.com/abc-defg-hij')],
    ['a reschedule', rescheduleConfirmation('Friday at 10 AM', null, 'pending')],
    ['a cancellation', cancellationConfirmation('Friday at 10 AM')],
    ['the variation selector', '✅\uFE0F Meeting confirmed!'],
    ['markdown emphasis', '✅ **Meeting confirmed!**'],
    ['another check mark', '✔️ meeting CONFIRMED'],
    ['the US spelling', '✅ Meeting canceled.'],
    ['a line of its own', 'Great news.\nMeeting confirmed!\n\n📅 Meeting scheduled for Friday'],
    ['a line of its own, in markdown', '**Meeting rescheduled.**'],
  ])('matches %s', (_, text) => {
    expect(OWN_CONFIRMATION.test(text)).toBe(true);
  });

  it.each([
    ['a question', 'Is the meeting confirmed for Friday, or shall I check?'],
    ['prose mentioning a meeting', 'Once the meeting is confirmed you will get an email.'],
    ['an offer', 'I can book a meeting on Friday at 10. Shall I?'],
    ['the time line alone (a meeting booked before)', 'Yes: 📅 Meeting scheduled for Friday at 10'],
    ['a recap that goes on', 'Meeting confirmed for Friday at 10, as you asked. See you then!'],
  ])('does not match %s', (_, text) => {
    expect(OWN_CONFIRMATION.test(text)).toBe(false);
  });
});

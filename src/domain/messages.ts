/**
 * Every text the customer can receive from the system itself (as opposed to the model's prose).
 * The confirmation is the seed's text, word for word.
 */

export function meetingConfirmation(friendlyTime: string, meetLink: string | null): string {
  const link = meetLink ? `🔗 Join here: ${meetLink}` : '🔗 The meeting link is in your calendar invite.';
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

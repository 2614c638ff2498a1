import type { BookingSettings } from './availability.js';
import { InvalidInput } from './errors.js';
import { ianaZoneName } from './time.js';

export interface Agent {
  agentId: string;
  userId: string;
  name: string;
  systemPrompt: string;
  timezone: string;
  model: string | null;
  meetingDurationMinutes: number;
  /** Working hours, buffer, notice and horizon (migration 005); absent where a query did not load them. */
  booking?: BookingSettings;
  createdAt: Date;
  updatedAt: Date;
}

export const MEETING_DURATION = { min: 5, max: 480, default: 30 } as const;

/** An owner's zone name, spelled as IANA spells it (ianaZoneName); a 400 when it is not one. */
export function zoneNameInput(zone: string, field = 'timezone'): string {
  const name = ianaZoneName(zone);
  if (name === undefined) {
    throw new InvalidInput(
      `${field} must be an IANA time zone name such as "Europe/Berlin" or "UTC" (got "${zone}")`,
    );
  }
  return name;
}

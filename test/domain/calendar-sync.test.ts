import { describe, expect, it } from 'vitest';
import type { CalendarEventState } from '../../src/domain/calendar-gateway.js';
import { driftOf, driftsOf, type SyncedMeeting } from '../../src/domain/calendar-sync.js';

const at = new Date('2026-12-01T10:00:00Z');
const meeting: SyncedMeeting = { meetingId: 'm1', googleEventId: 'e1', meetingTime: at, durationMinutes: 30 };
const minutes = (n: number) => new Date(at.getTime() + n * 60_000);
const event = (over: Partial<CalendarEventState> = {}): CalendarEventState => ({
  eventId: 'e1',
  cancelled: false,
  start: at,
  end: minutes(30),
  ...over,
});

describe('driftOf', () => {
  it('is null while the event agrees with the meeting', () => {
    expect(driftOf(meeting, event())).toBeNull();
    // Seconds Google may carry round to the minute meetings are stored in.
    expect(driftOf(meeting, event({ end: new Date(minutes(30).getTime() + 20_000) }))).toBeNull();
  });

  it('cancels when the event was deleted, whatever its times say', () => {
    expect(driftOf(meeting, event({ cancelled: true, start: null, end: null }))).toEqual({
      kind: 'cancelled',
      meetingId: 'm1',
      eventId: 'e1',
    });
  });

  it('moves to the new start, and to the new length', () => {
    expect(driftOf(meeting, event({ start: minutes(60), end: minutes(90) }))).toEqual({
      kind: 'moved',
      meetingId: 'm1',
      eventId: 'e1',
      meetingTime: minutes(60),
      durationMinutes: 30,
    });
    expect(driftOf(meeting, event({ end: minutes(50) }))).toMatchObject({
      kind: 'moved',
      meetingTime: at,
      durationMinutes: 50,
    });
  });

  it('leaves alone an event made all-day, or one ending before it starts', () => {
    expect(driftOf(meeting, event({ start: null, end: null }))).toBeNull();
    expect(driftOf(meeting, event({ end: at }))).toBeNull();
    expect(driftOf(meeting, event({ end: minutes(-5) }))).toBeNull();
  });
});

describe('driftsOf', () => {
  const other: SyncedMeeting = {
    meetingId: 'm2',
    googleEventId: 'e2',
    meetingTime: minutes(120),
    durationMinutes: 30,
  };

  it('matches events to meetings by event id and ignores events of no meeting', () => {
    const drifts = driftsOf(
      [meeting, other],
      [
        event({ eventId: 'x', cancelled: true }),
        event({ eventId: 'e2', cancelled: true }),
        event({ start: minutes(60), end: minutes(90) }),
      ],
    );
    expect(drifts.map((d) => [d.meetingId, d.kind])).toEqual([
      ['m2', 'cancelled'],
      ['m1', 'moved'],
    ]);
  });

  it('takes the last answer for an event: one that agrees again clears its drift', () => {
    expect(driftsOf([meeting], [event({ start: minutes(60), end: minutes(90) }), event()])).toEqual([]);
  });
});

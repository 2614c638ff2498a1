/** Busy time read from events.list (grants without freeBusy) counts events the way freeBusy does. */
import type { calendar_v3 } from '@googleapis/calendar';
import { describe, expect, it } from 'vitest';
import { busyIntervalOf } from '../../src/google/google-calendar.js';

const timed = (extra: calendar_v3.Schema$Event = {}): calendar_v3.Schema$Event => ({
  status: 'confirmed',
  start: { dateTime: '2026-12-01T10:00:00+05:30' },
  end: { dateTime: '2026-12-01T11:00:00+05:30' },
  ...extra,
});

describe('busyIntervalOf', () => {
  it('a confirmed or tentative timed event blocks its time', () => {
    for (const status of ['confirmed', 'tentative']) {
      expect(busyIntervalOf(timed({ status }), 'Asia/Kolkata')).toEqual({
        start: new Date('2026-12-01T04:30:00Z'),
        end: new Date('2026-12-01T05:30:00Z'),
      });
    }
  });

  it.each([
    ['cancelled', timed({ status: 'cancelled' })],
    ['transparent (shown as free)', timed({ transparency: 'transparent' })],
    [
      'declined by the owner',
      timed({
        attendees: [
          { email: 'owner@x.test', self: true, responseStatus: 'declined' },
          { email: 'boss@x.test', responseStatus: 'accepted' },
        ],
      }),
    ],
    ['without times', { status: 'confirmed' }],
    ['ending before it starts', timed({ end: { dateTime: '2026-12-01T09:00:00+05:30' } })],
  ])('%s: not busy', (_name, event) => {
    expect(busyIntervalOf(event, 'Asia/Kolkata')).toBeNull();
  });

  it('an invitation someone else declined still blocks the owner', () => {
    const e = timed({ attendees: [{ email: 'guest@x.test', responseStatus: 'declined' }] });
    expect(busyIntervalOf(e, 'UTC')).not.toBeNull();
  });

  it('an all-day event spans its dates in the calendar’s time zone (end date exclusive)', () => {
    const e: calendar_v3.Schema$Event = { start: { date: '2026-12-01' }, end: { date: '2026-12-02' } };
    expect(busyIntervalOf(e, 'Asia/Kolkata')).toEqual({
      start: new Date('2026-11-30T18:30:00Z'),
      end: new Date('2026-12-01T18:30:00Z'),
    });
    // An unknown zone name from the server falls back to UTC rather than failing.
    expect(busyIntervalOf(e, 'Not/AZone')?.start).toEqual(new Date('2026-12-01T00:00:00Z'));
  });
});

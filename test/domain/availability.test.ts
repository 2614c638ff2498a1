import { describe, expect, it } from 'vitest';
import { freeSlots, type WorkingHours, withinWorkingHours } from '../../src/domain/availability.js';

/**
 * Working hours across a change of clocks at local midnight: America/Santiago went from -04 to -03 at
 * 2025-09-07 00:00, so that Sunday began at 01:00 -03 (04:00Z) and Saturday's last hour ran to it.
 */
describe('working hours around a midnight clock change (America/Santiago, 2025-09-06/07)', () => {
  const zone = 'America/Santiago';
  const hours: WorkingHours = {
    saturday: [{ start: '09:00', end: '24:00' }],
    sunday: [{ start: '00:00', end: '12:00' }],
  };
  const at = (iso: string) => new Date(iso);

  it("keeps Saturday's last hour (23:00-24:00 -04) inside Saturday's hours", () => {
    expect(withinWorkingHours(at('2025-09-07T03:00:00Z'), at('2025-09-07T03:30:00Z'), zone, hours)).toBe(
      true,
    );
    expect(withinWorkingHours(at('2025-09-07T03:30:00Z'), at('2025-09-07T04:00:00Z'), zone, hours)).toBe(
      true,
    );
  });

  it('starts Sunday when Sunday begins (01:00 -03)', () => {
    expect(withinWorkingHours(at('2025-09-07T04:00:00Z'), at('2025-09-07T04:30:00Z'), zone, hours)).toBe(
      true,
    );
  });

  it('offers only slots that booking then accepts', () => {
    const slots = freeSlots({
      zone,
      hours,
      durationMinutes: 30,
      bufferMinutes: 0,
      busy: [],
      earliest: at('2025-09-06T12:00:00Z'),
      latest: at('2025-09-08T12:00:00Z'),
      from: at('2025-09-06T12:00:00Z'),
      to: at('2025-09-08T12:00:00Z'),
    });
    expect(slots.map((s) => s.toISOString())).toContain('2025-09-07T03:00:00.000Z');
    for (const s of slots) {
      expect(withinWorkingHours(s, new Date(s.getTime() + 30 * 60_000), zone, hours)).toBe(true);
    }
  });
});

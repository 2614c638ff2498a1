/**
 * The owner's booking lock (OwnerBookingLock over BookingLeaseStore): in-process waiting only for
 * overlapping holds, `quietSince()` for a read sent before the lock, and `confirm()` before a
 * Calendar change when the hold may have lapsed.
 */
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Upstream } from '../../src/domain/errors.js';
import { BookingLeaseStore, type LeaseRange, WHOLE_OWNER } from '../../src/store/booking-leases.js';
import type { Database } from '../../src/store/database.js';
import { OwnerBookingLock } from '../../src/worker/owner-lock.js';
import { openTestDatabase } from '../helpers/database.js';

let database: Database;
let close: () => Promise<void>;
let leases: BookingLeaseStore;
const logger = pino({ level: 'silent' });

beforeAll(async () => {
  ({ database, close } = await openTestDatabase());
  leases = new BookingLeaseStore(database.db);
});
afterAll(async () => {
  await close?.();
});

const at = (h: number) => Date.UTC(2031, 0, 6, h);
const range = (from: number, to: number): LeaseRange => ({ from, to });
let owners = 0;
const newOwner = () => `lock-owner-${++owners}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A lock whose holds are never renewed, as in a process that stalled: they lapse after `leaseMs`. */
const stalledLock = (leaseMs: number) =>
  new OwnerBookingLock(leases, logger, { leaseMs, renewEveryMs: 60_000 });

describe('OwnerBookingLock', () => {
  it('in one process, waits only for overlapping holds', async () => {
    const lock = new OwnerBookingLock(leases, logger);
    const u = newOwner();
    const ten = await lock.acquire(u, range(at(10), at(11)));
    const order: string[] = [];
    const two = lock.acquire(u, range(at(14), at(15))).then((l) => {
      order.push('two');
      return l;
    });
    const tenAgain = lock.acquire(u, range(at(10), at(11))).then((l) => {
      order.push('ten again');
      return l;
    });
    await (await two).release();
    expect(order).toEqual(['two']);
    await ten.release();
    await (await tenAgain).release();
    expect(order).toEqual(['two', 'ten again']);
  });

  it('quietSince(): a read sent before the lock is kept only if no hold of the owner ended after it', async () => {
    const lock = new OwnerBookingLock(leases, logger);
    const u = newOwner();
    const sentFirst = performance.now();
    const ten = await lock.acquire(u, range(at(10), at(11)));
    expect(ten.quietSince(sentFirst)).toBe(true); // nothing of the owner ever ended
    // A read sent while the 10:00 hold is held, by a booking that then waits for it.
    const sentWhileHeld = performance.now();
    const waiting = lock.acquire(u, range(at(10), at(11)));
    await sleep(30);
    await ten.release();
    const tenAgain = await waiting;
    expect(tenAgain.quietSince(sentWhileHeld)).toBe(false);
    await tenAgain.release();
    // A read sent well after the last hold ended is kept, whatever the range.
    await sleep(200);
    const sentLater = performance.now();
    const two = await lock.acquire(u, range(at(14), at(15)));
    expect(two.quietSince(sentLater)).toBe(true);
    // A hold of another range ending after the read was sent counts too (the read covers its time).
    const sentBefore = performance.now();
    await sleep(5);
    await two.release();
    const eleven = await lock.acquire(u, range(at(11), at(12)));
    expect(eleven.quietSince(sentBefore)).toBe(false);
    await eleven.release();
  });

  it('confirm(): nothing to do on a fresh hold; a lapsed hold still free is renewed', async () => {
    const lock = stalledLock(90);
    const u = newOwner();
    const held = await lock.acquire(u, range(at(10), at(11)));
    await held.confirm();
    await sleep(150); // the hold lapsed, nobody took the range
    await held.confirm();
    // Renewed: an overlapping taker is refused again.
    expect((await leases.tryAcquire(u, 'other', range(at(10), at(11)), 30_000)).acquired).toBe(false);
    await held.release();
  });

  it('confirm(): a hold that lapsed and was taken by an overlapping booking fails, retryable', async () => {
    const lock = stalledLock(90);
    const u = newOwner();
    const held = await lock.acquire(u, range(at(10), at(11)));
    await sleep(150);
    expect((await leases.tryAcquire(u, 'other', range(at(10), at(11)), 30_000)).acquired).toBe(true);
    const err = await held.confirm().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Upstream);
    expect((err as Upstream).retryable).toBe(true);
    await held.release();
    // Its release left the other holder's hold alone.
    expect((await leases.tryAcquire(u, 'third', range(at(10), at(11)), 30_000)).acquired).toBe(false);
  });

  it('confirm(): a lapsed hold is asked about even when the wall clock was stepped back meanwhile', async () => {
    const lock = stalledLock(90);
    const u = newOwner();
    const held = await lock.acquire(u, range(at(10), at(11)));
    await sleep(150);
    expect((await leases.tryAcquire(u, 'other', range(at(10), at(11)), 30_000)).acquired).toBe(true);
    // The wall clock set back by a second (NTP after a stall): by it the hold was taken a moment ago.
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() - 1_000 });
    try {
      await expect(held.confirm()).rejects.toBeInstanceOf(Upstream);
    } finally {
      vi.useRealTimers();
    }
    await held.release();
  });

  it('outlast: waits past a stalled holder’s lease, then holds the time and the stalled hold cannot be renewed', async () => {
    // Another process's hold that nobody renews (its process stalled).
    const stalled = stalledLock(1_500);
    const lock = new OwnerBookingLock(leases, logger, { leaseMs: 1_500, waitMs: 300 });
    const u = newOwner();
    const held = await stalled.acquire(u, range(at(10), at(11)));
    // The usual wait gives up well before the stalled hold lapses.
    const usual = await lock.acquire(u, WHOLE_OWNER).catch((e: unknown) => e);
    expect(usual).toBeInstanceOf(Upstream);
    const whole = await lock.acquire(u, WHOLE_OWNER, undefined, undefined, { outlast: true });
    // The stalled run runs again: its hold is gone, so it may change nothing.
    await expect(held.confirm()).rejects.toBeInstanceOf(Upstream);
    await held.release();
    expect((await leases.tryAcquire(u, 'other', range(at(10), at(11)), 30_000)).acquired).toBe(false);
    await whole.release();
  });

  it('outlast: while it waits, this process’s other bookings of the owner do not wait behind it', async () => {
    const lock = new OwnerBookingLock(leases, logger, { leaseMs: 1_500, waitMs: 300 });
    const u = newOwner();
    const ten = await lock.acquire(u, range(at(10), at(11)));
    const whole = lock.acquire(u, WHOLE_OWNER, undefined, undefined, { outlast: true });
    // A booking of another range, in the same process, gets its hold at once.
    const two = await lock.acquire(u, range(at(14), at(15)));
    await two.release();
    await ten.release();
    await (await whole).release();
  });

  it('outlast: an aborted wait stops', async () => {
    const lock = new OwnerBookingLock(leases, logger, { leaseMs: 1_500, waitMs: 300 });
    const u = newOwner();
    const ten = await lock.acquire(u, range(at(10), at(11)));
    const stop = new AbortController();
    const whole = lock.acquire(u, WHOLE_OWNER, undefined, undefined, { outlast: true, signal: stop.signal });
    stop.abort(new Error('stopping'));
    await expect(whole).rejects.toThrow('stopping');
    // It gave nothing back that it did not hold, and took nothing.
    expect((await leases.tryAcquire(u, 'other', range(at(14), at(15)), 30_000)).acquired).toBe(true);
    await ten.release();
  });
});

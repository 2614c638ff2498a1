import type { Transaction } from 'kysely';
import type { OwnerEvent } from '../domain/owner-events.js';
import type { DB } from '../store/schema.js';

/** Records an owner event in the caller's transaction (src/worker/webhooks.ts delivers it). */
export interface OwnerEventSink {
  emit(trx: Transaction<DB>, event: OwnerEvent): Promise<void>;
  /**
   * Enqueues the delivery of a row the caller wrote itself in `trx` (as part of a larger statement,
   * e.g. MeetingStore.insertBooked); `emit` is both steps.
   */
  enqueueRecorded(trx: Transaction<DB>, deliveryId: string, userId: string): Promise<void>;
  /**
   * Enqueues the delivery of a row the caller wrote with `enqueued = false` in a statement that
   * committed (the reply's own, MeetingStore.bookedRows). Never throws: the relay catches up.
   */
  relayOne(deliveryId: string): Promise<void>;
}

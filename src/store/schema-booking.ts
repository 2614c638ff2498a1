import type { ColumnType, Kysely, Transaction } from 'kysely';
import type { AgentTable, DB, MeetingTable } from './schema.js';

/**
 * Tables and columns added by migration 005 (booking settings, reschedules, booking leases, owner
 * webhooks), as Kysely sees them. Kept beside schema.ts so the stores that use them can widen the
 * shared `Kysely<DB>` with `widen()`; fold into schema.ts when convenient.
 */
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTime = ColumnType<Date | null, Date | null | undefined, Date | null>;

export interface AgentBookingColumns {
  working_hours: ColumnType<unknown | null, string | null | undefined, string | null>;
  buffer_minutes: ColumnType<number, number | undefined, number>;
  min_notice_minutes: number | null;
  horizon_days: number | null;
}

export interface MeetingRescheduleColumns {
  rescheduled_at: NullableTime;
  reschedule_count: ColumnType<number, number | undefined, number>;
  previous_meeting_time: NullableTime;
}

export interface OwnerBookingLeaseTable {
  user_id: string;
  /** Live and lapsed holds, a JSON array of LeaseHold (migration 009). */
  holds: ColumnType<LeaseHold[], string | undefined, string>;
  /** When a hold was last given back or dropped, epoch ms by the database's clock; 0: never (migration 010). */
  released_at: ColumnType<number, number | undefined, number>;
}

/** One hold of an owner's booking lease: the time range it covers (epoch ms) and until when. */
export interface LeaseHold {
  holder: string;
  from: number;
  to: number;
  until: number;
}

export interface OwnerWebhookTable {
  user_id: string;
  url: string;
  secret_enc: string;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface WebhookDeliveryTable {
  delivery_id: string;
  user_id: string;
  event_type: string;
  event_key: string;
  payload: ColumnType<unknown, string, string>;
  status: ColumnType<
    'pending' | 'delivered' | 'failed',
    'pending' | undefined,
    'pending' | 'delivered' | 'failed'
  >;
  attempts: ColumnType<number, number | undefined, number>;
  last_error: string | null;
  last_status_code: number | null;
  enqueued: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: Timestamp;
  last_attempt_at: NullableTime;
  delivered_at: NullableTime;
}

export interface BookingDB extends Omit<DB, 'agents' | 'meetings'> {
  agents: AgentTable & AgentBookingColumns;
  meetings: MeetingTable & MeetingRescheduleColumns;
  owner_booking_leases: OwnerBookingLeaseTable;
  owner_webhooks: OwnerWebhookTable;
  webhook_deliveries: WebhookDeliveryTable;
}

/** The same connection, typed with the tables of migration 005. */
export function widen(db: Kysely<DB>): Kysely<BookingDB>;
export function widen(db: Transaction<DB>): Transaction<BookingDB>;
export function widen(db: Kysely<DB> | Transaction<DB>): Kysely<BookingDB> | Transaction<BookingDB> {
  return db as unknown as Kysely<BookingDB>;
}

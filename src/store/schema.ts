import type { ColumnType, Generated } from 'kysely';

/** Table shapes as Kysely sees them. Times are `timestamptz` and arrive as `Date` on both drivers. */
export interface StoredModelOutput {
  text: string | null;
  toolCalls: Array<{ id: string; name: string; arguments: string }>;
}

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;

export interface CalendarConnectionTable {
  user_id: string;
  access_token_enc: string;
  refresh_token_enc: string | null;
  token_expiry: ColumnType<Date, Date, Date>;
  scope: string;
  status: 'connected' | 'revoked';
  revoked_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  last_refreshed_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  refresh_lock_until: ColumnType<Date | null, Date | null | undefined, Date | null>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface AgentTable {
  agent_id: string;
  user_id: string;
  name: string;
  system_prompt: string;
  timezone: string;
  model: string | null;
  meeting_duration_minutes: number;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface ConversationTable {
  conversation_id: string;
  agent_id: string;
  customer_name: string | null;
  customer_email: string | null;
  customer_token_hash: string;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface MessageTable {
  seq: Generated<string>;
  message_id: string;
  conversation_id: string;
  role: 'customer' | 'assistant';
  content: string;
  reply_to: string | null;
  status: 'pending' | 'answered' | 'failed' | null;
  attempts: Generated<number>;
  model_output: ColumnType<StoredModelOutput | null, string | null | undefined, string | null>;
  last_error: string | null;
  processed_at: Date | null;
  created_at: Timestamp;
  /** The queue: a worker holds this pending message until then (migration 007). */
  claimed_until: Date | null;
  /** The queue: a failed attempt's backoff; the message is not claimed before then. */
  run_after: Date | null;
}

export interface MeetingTable {
  meeting_id: string;
  user_id: string;
  agent_id: string | null;
  conversation_id: string;
  message_id: string | null;
  idempotency_key: string;
  google_event_id: string;
  title: string;
  customer_name: string | null;
  customer_email: string | null;
  participants: string[];
  meeting_time: ColumnType<Date, Date, Date>;
  duration_minutes: number;
  timezone: string | null;
  meet_link: string | null;
  html_link: string | null;
  status: 'scheduled' | 'cancelled';
  cancelled_at: Date | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface DB {
  google_calendar_tokens: CalendarConnectionTable;
  agents: AgentTable;
  conversations: ConversationTable;
  messages: MessageTable;
  meetings: MeetingTable;
}

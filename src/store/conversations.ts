import { createHash, randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { newId } from './ids.js';
import type { DB } from './schema.js';

export interface Conversation {
  conversationId: string;
  agentId: string;
  customerName: string | null;
  customerEmail: string | null;
  customerTokenHash: string;
  createdAt: Date;
}

export const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');

export class ConversationStore {
  constructor(private readonly db: Kysely<DB>) {}

  /** Creates a conversation and returns its customer token; only the token's hash is stored. */
  async create(input: {
    agentId: string;
    customerName?: string | undefined;
    customerEmail?: string | undefined;
  }): Promise<{ conversation: Conversation; customerToken: string }> {
    const customerToken = `ct_${randomBytes(32).toString('base64url')}`;
    const row = await this.db
      .insertInto('conversations')
      .values({
        conversation_id: newId('cnv'),
        agent_id: input.agentId,
        customer_name: input.customerName ?? null,
        customer_email: input.customerEmail ?? null,
        customer_token_hash: hashToken(customerToken),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return {
      customerToken,
      conversation: {
        conversationId: row.conversation_id,
        agentId: row.agent_id,
        customerName: row.customer_name,
        customerEmail: row.customer_email,
        customerTokenHash: row.customer_token_hash,
        createdAt: row.created_at,
      },
    };
  }

  async get(conversationId: string): Promise<Conversation | undefined> {
    const r = await this.db
      .selectFrom('conversations')
      .selectAll()
      .where('conversation_id', '=', conversationId)
      .executeTakeFirst();
    return r
      ? {
          conversationId: r.conversation_id,
          agentId: r.agent_id,
          customerName: r.customer_name,
          customerEmail: r.customer_email,
          customerTokenHash: r.customer_token_hash,
          createdAt: r.created_at,
        }
      : undefined;
  }
}

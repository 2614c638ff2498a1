import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { Config } from '../../config.js';
import { Forbidden, InvalidInput, NotFound, Unauthorized } from '../../domain/errors.js';
import type { AgentStore } from '../../store/agents.js';
import { type Conversation, type ConversationStore, hashToken } from '../../store/conversations.js';
import type { Message, MessageAccess, MessageStore } from '../../store/messages.js';
import { bearerToken, isAdmin, secretEquals } from '../auth.js';
import type { LiveFeed } from '../live-feed.js';
import type { WindowCounter } from '../rate-limit.js';
import { errorResponses, ID_PATTERN, IdString } from '../schemas.js';

export interface ConversationRouteDeps {
  adminKey: string;
  agents: AgentStore;
  conversations: ConversationStore;
  messages: MessageStore;
  /**
   * Stores a customer message (its own job): JobQueue.accept, which also claims it for this process's
   * worker when a slot is free; default: messages.insertCustomerMessage. Undefined: refused.
   */
  accept?:
    | ((conversationId: string, content: string, access: MessageAccess) => Promise<Message | undefined>)
    | undefined;
  feed: LiveFeed;
  perConversation: WindowCounter;
  sse: Config['sse'];
}

const MessageBody = Type.Object({
  message_id: Type.String(),
  role: Type.Union([Type.Literal('customer'), Type.Literal('assistant')]),
  content: Type.String(),
  created_at: Type.String(),
});

const messageJson = (m: Message) => ({
  message_id: m.messageId,
  role: m.role,
  content: m.content,
  created_at: m.createdAt.toISOString(),
});

const ConversationParams = Type.Object({ conversation_id: IdString });
/** The conversation's customer token or the admin key, in the Authorization header (OpenAPI). */
const CUSTOMER_OR_ADMIN: Array<Record<string, string[]>> = [{ customer: [] }, { admin: [] }];
const SSE_KEEPALIVE_MS = 15_000;
/** Open SSE streams one conversation may have in this process (a customer's tabs and devices). */
export const SSE_STREAMS_PER_CONVERSATION = 10;
/**
 * A stream whose client does not read (its socket's buffers full) is ended once this much waits in
 * its buffer: what it is sent would otherwise pile up in this process's memory. It reconnects, when it
 * reads again, from its Last-Event-ID.
 */
export const SSE_MAX_BUFFERED_BYTES = 1024 * 1024;

/** The customer API: what a chat widget calls. */
export const conversationRoutes: FastifyPluginAsyncTypebox<ConversationRouteDeps> = async (app, deps) => {
  /**
   * The caller must hold this conversation's customer token (or the admin key). A customer token may
   * also come as `?token=` because browsers' EventSource cannot send headers; the admin key never
   * does: URLs end up in proxies' logs and browser history, which our log scrubbing does not reach.
   */
  async function authorize(
    req: FastifyRequest,
    conversationId: string,
    allowQueryToken = false,
  ): Promise<Conversation> {
    const header = bearerToken(req);
    const token = header ?? (allowQueryToken ? (req.query as { token?: string }).token : undefined);
    if (!token) throw new Unauthorized('Send Authorization: Bearer <customer_token>');
    if (header === undefined && secretEquals(token, deps.adminKey)) {
      throw new Unauthorized('The admin key is accepted only in the Authorization header, never in a URL');
    }
    const admin = isAdmin(req, deps.adminKey);
    const conversation = await deps.conversations.get(conversationId);
    if (admin) {
      if (!conversation) throw new NotFound(`No conversation ${conversationId}`);
      return conversation;
    }
    // Same answer for "no such conversation" and "not your conversation": ids are not enumerable.
    if (!conversation || !secretEquals(hashToken(token), conversation.customerTokenHash)) {
      throw new Forbidden('This token does not belong to that conversation');
    }
    return conversation;
  }

  app.post(
    '/api/agents/:agent_id/conversations',
    {
      // Both fields are optional, so is the body: a POST without one (no content type, as a bare
      // `curl -X POST` or `fetch(url, {method: 'POST'})` sends) opens a conversation too. The
      // validator would otherwise judge the missing body as a non-object (a 400).
      preValidation: async (req) => {
        req.body ??= {};
      },
      schema: {
        tags: ['conversations'],
        summary: 'Open a conversation with an agent; returns the customer token once',
        params: Type.Object({ agent_id: IdString }),
        body: Type.Optional(
          Type.Object(
            {
              customer_name: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
              customer_email: Type.Optional(Type.String({ format: 'email', maxLength: 255 })),
            },
            { additionalProperties: false },
          ),
        ),
        response: {
          201: Type.Object({
            conversation_id: Type.String(),
            customer_token: Type.String(),
            agent_id: Type.String(),
          }),
          ...errorResponses,
        },
      },
    },
    async (req, reply) => {
      const agent = await deps.agents.get(req.params.agent_id);
      if (!agent) throw new NotFound(`No agent ${req.params.agent_id}`);
      const { conversation, customerToken } = await deps.conversations.create({
        agentId: agent.agentId,
        customerName: req.body?.customer_name?.trim() || undefined,
        customerEmail: req.body?.customer_email,
      });
      return reply.code(201).send({
        conversation_id: conversation.conversationId,
        customer_token: customerToken,
        agent_id: agent.agentId,
      });
    },
  );

  app.post(
    '/api/conversations/:conversation_id/messages',
    {
      schema: {
        tags: ['conversations'],
        summary: 'Send a customer message; the agent answers asynchronously',
        security: CUSTOMER_OR_ADMIN,
        params: ConversationParams,
        body: Type.Object(
          { content: Type.String({ minLength: 1, maxLength: 4000 }) },
          { additionalProperties: false },
        ),
        response: { 202: Type.Object({ message_id: Type.String() }), ...errorResponses },
      },
    },
    async (req, reply) => {
      const conversationId = req.params.conversation_id;
      const token = bearerToken(req);
      if (!token) throw new Unauthorized('Send Authorization: Bearer <customer_token>');
      if (req.body.content.trim() === '') throw new InvalidInput('content must not be blank');
      const admin = isAdmin(req, deps.adminKey);
      const tokenHash = admin ? undefined : hashToken(token);
      // The common case is one statement: the insert checks the conversation and its token itself
      // (MessageStore.insertCustomerMessage). The hit is counted first, so that concurrent requests
      // cannot all pass the limit, and given back unless the request turns out to be the holder's
      // (refused, or failed). It is counted per credential (the token's digest, or the admin key): a
      // caller without the conversation's token counts against a bucket of its own, so even requests
      // of theirs still in flight cannot push the holder over the limit.
      const bucket = `${conversationId}:${tokenHash ?? 'admin'}`;
      const wait = deps.perConversation.hit(bucket);
      let holder = false;
      try {
        if (wait > 0) {
          // Over the limit: only the conversation's holder learns it (a refused caller gets 403/404).
          await authorize(req, conversationId);
          holder = true;
          return reply
            .code(429)
            .header('retry-after', String(wait))
            .send({ success: false, error: `Too many messages in this conversation; retry in ${wait} s` });
        }
        // One statement: the message is its own job (src/store/message-queue.ts), stored and queued
        // together; claimed by it for this process's worker when a slot is free (JobQueue.accept),
        // else its commit wakes the workers (a second statement only when another insert of the
        // conversation claimed at that moment).
        const access: MessageAccess = tokenHash === undefined ? 'admin' : { customerTokenHash: tokenHash };
        const message = deps.accept
          ? await deps.accept(conversationId, req.body.content, access)
          : await deps.messages.insertCustomerMessage(conversationId, req.body.content, access);
        // Same answers as authorize(): ids are not enumerable.
        if (!message) {
          if (admin) throw new NotFound(`No conversation ${conversationId}`);
          throw new Forbidden('This token does not belong to that conversation');
        }
        holder = true;
        return reply.code(202).send({ message_id: message.messageId });
      } finally {
        if (!holder) deps.perConversation.refund(bucket);
      }
    },
  );

  app.get(
    '/api/conversations/:conversation_id/messages',
    {
      schema: {
        tags: ['conversations'],
        summary: 'Messages in order, optionally after a given message',
        security: CUSTOMER_OR_ADMIN,
        params: ConversationParams,
        querystring: Type.Object({
          after: Type.Optional(IdString),
          limit: Type.Integer({ minimum: 1, maximum: 500, default: 200 }),
        }),
        response: { 200: Type.Object({ messages: Type.Array(MessageBody) }), ...errorResponses },
      },
    },
    async (req) => {
      const conversation = await authorize(req, req.params.conversation_id);
      const list = await deps.messages.list(conversation.conversationId, {
        afterMessageId: req.query.after,
        limit: req.query.limit,
      });
      if (!list) throw new InvalidInput(`after: no message ${req.query.after} in this conversation`);
      return { messages: list.map(messageJson) };
    },
  );

  app.get(
    '/api/conversations/:conversation_id/events',
    {
      schema: {
        tags: ['conversations'],
        summary: 'Server-Sent Events: one `message` event per new message (resumable with Last-Event-ID)',
        security: [...CUSTOMER_OR_ADMIN, { customerQuery: [] }],
        params: ConversationParams,
        querystring: Type.Object({
          after: Type.Optional(IdString),
          token: Type.Optional(Type.String({ maxLength: 200 })),
        }),
      },
    },
    async (req, reply) => {
      const conversation = await authorize(req, req.params.conversation_id, true);
      const lastEventId = req.headers['last-event-id'];
      const fromHeader = typeof lastEventId === 'string' && lastEventId !== '';
      // The header is checked as `after` is (its schema), and neither is echoed: it can be 16 KB.
      if (fromHeader && !ID_PATTERN.test(lastEventId)) {
        throw new InvalidInput('Last-Event-ID is not a message id');
      }
      let cursor = fromHeader ? lastEventId : req.query.after;
      if (
        cursor !== undefined &&
        !(await deps.messages.list(conversation.conversationId, { afterMessageId: cursor, limit: 1 }))
      ) {
        throw new InvalidInput(
          `${fromHeader ? 'Last-Event-ID' : 'after'}: no such message in this conversation`,
        );
      }
      if (cursor === undefined) {
        // Without a cursor the stream starts now: only messages stored from here on.
        const latest = await deps.messages.latest(conversation.conversationId);
        cursor = latest?.messageId;
      }
      // Every message wakes every open stream of its conversation, and each reads what it has not
      // sent: unbounded streams would multiply the database's reads per message. Checked with no
      // await before streamMessages subscribes, so concurrent openings cannot pass it together.
      if (deps.feed.streamsOf(conversation.conversationId) >= SSE_STREAMS_PER_CONVERSATION) {
        return reply.code(429).send({
          success: false,
          error: `Too many open streams for this conversation (at most ${SSE_STREAMS_PER_CONVERSATION}); close one first`,
        });
      }
      return streamMessages(req, reply, conversation.conversationId, cursor);
    },
  );

  // Open streams, ended when the server closes: each is an active connection, which the server's
  // close waits for, so a process stopping (SIGTERM, a deploy) would hang with any chat tab open.
  // Ended, each browser's EventSource reconnects (after `retry`), to another process or this one
  // restarted, and catches up from its Last-Event-ID.
  const streams = new Set<() => void>();
  /** Open streams per client address (req.ip: TRUST_PROXY decides whose address that is). */
  const perIp = new Map<string, number>();
  // A stream whose request was still being authorized when the close began would register after it
  // and hold the close as well: refused instead (503; EventSource retries).
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
    for (const end of [...streams]) end();
  });

  function streamMessages(
    req: FastifyRequest,
    reply: FastifyReply,
    conversationId: string,
    startAfter: string | undefined,
  ) {
    if (closing) {
      return reply.code(503).send({ success: false, error: 'The server is shutting down; reconnect' });
    }
    // Its client left while it was being authorized: nothing to stream to, nothing to count (its
    // close events are over, so a stream registered now would be held for its whole lifetime).
    // (Its hang-up destroys the request, and ends or destroys the socket.)
    if (req.raw.destroyed || req.raw.socket.destroyed || !req.raw.socket.writable) {
      reply.hijack();
      return;
    }
    // Each open stream holds a socket and a subscription for as long as its client likes: bounded
    // per process (503: another process, or this one in a moment) and per address (429), checked and
    // counted with no await before the stream registers, so concurrent openings cannot pass together.
    if (streams.size >= deps.sse.maxStreams) {
      return reply
        .code(503)
        .header('retry-after', '10')
        .send({ success: false, error: 'Too many open streams on this server; reconnect shortly' });
    }
    const ip = req.ip;
    const fromIp = perIp.get(ip) ?? 0;
    if (fromIp >= deps.sse.perIp) {
      return reply.code(429).send({
        success: false,
        error: `Too many open streams from this address (at most ${deps.sse.perIp}); close one first`,
      });
    }
    perIp.set(ip, fromIp + 1);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    let cursor = startAfter;
    let running = false;
    let again = false;
    let closed = false;
    /** Writes `text`, unless the client has left this much unread: then the stream is dropped. */
    const send = (text: string): boolean => {
      if (closed) return false;
      if (res.writableLength > SSE_MAX_BUFFERED_BYTES) {
        req.log.warn({ buffered: res.writableLength }, 'SSE client is not reading; stream dropped');
        end(); // destroys it: what waits unread would hold the socket
        return false;
      }
      res.write(text);
      return true;
    };
    // Serialized catch-up: a wake during a read schedules one more read, never two at once.
    const flush = async (): Promise<void> => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          const batch = await deps.messages.list(conversationId, { afterMessageId: cursor, limit: 200 });
          for (const m of batch ?? []) {
            if (!send(`id: ${m.messageId}\nevent: message\ndata: ${JSON.stringify(messageJson(m))}\n\n`)) {
              return;
            }
            cursor = m.messageId;
          }
          if (batch && batch.length === 200) again = true;
        } while (again && !closed);
      } catch (err) {
        if (!closed) req.log.warn({ err }, 'SSE catch-up failed');
      } finally {
        running = false;
      }
    };
    const unsubscribe = deps.feed.subscribe(conversationId, () => void flush());
    const keepalive = setInterval(() => send(': keepalive\n\n'), SSE_KEEPALIVE_MS);
    // Ended after its lifetime: a stream is not held for good by one client. EventSource reconnects
    // (after `retry`) from its Last-Event-ID, through the rate limit and the caps above again.
    const lifetime = setTimeout(() => end(), deps.sse.maxStreamSeconds * 1000);
    lifetime.unref();
    function close() {
      if (closed) return;
      closed = true;
      streams.delete(end);
      const left = (perIp.get(ip) ?? 1) - 1;
      if (left > 0) perIp.set(ip, left);
      else perIp.delete(ip);
      clearInterval(keepalive);
      clearTimeout(lifetime);
      unsubscribe();
    }
    function end() {
      close();
      // What a client that stopped reading has left unread would hold the socket (and the server's
      // close) open: it reconnects from its Last-Event-ID and gets it again.
      if (res.writableLength > 0) res.destroy();
      else res.end();
    }
    streams.add(end);
    req.raw.on('close', close);
    res.on('close', close);
    res.on('error', close);
    void flush();
  }
};

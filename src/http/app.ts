import { STATUS_CODES } from 'node:http';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Ajv } from 'ajv';
import addFormatsPlugin from 'ajv-formats';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { DomainError, InvalidInput } from '../domain/errors.js';
import type { Metrics } from '../metrics.js';
import type { AgentStore } from '../store/agents.js';
import type { CalendarConnectionStore } from '../store/calendar-connections.js';
import type { ConnectionCache } from '../store/connection-cache.js';
import type { ConversationStore } from '../store/conversations.js';
import type { MessageStore } from '../store/messages.js';
import { isAdmin, requireAdmin } from './auth.js';
import { duplicateKey } from './json-keys.js';
import type { LiveFeed } from './live-feed.js';
import { WindowCounter } from './rate-limit.js';
import { agentRoutes } from './routes/agents.js';
import { calendarConnectionRoutes } from './routes/calendar-connections.js';
import { type ConversationRouteDeps, conversationRoutes } from './routes/conversations.js';
import { healthRoutes } from './routes/health.js';
import { ErrorBody } from './schemas.js';

const addFormats = addFormatsPlugin as unknown as (ajv: Ajv) => Ajv;

export interface HttpDeps {
  logger: Logger;
  adminKey: string;
  now: () => Date;
  ready: () => Promise<boolean>;
  connections: CalendarConnectionStore;
  connectionCache: Pick<ConnectionCache, 'get' | 'evict'>;
  agents: AgentStore;
  conversations: ConversationStore;
  messages: MessageStore;
  /** Stores a customer message (ConversationRouteDeps.accept); default: messages.insertCustomerMessage. */
  accept?: ConversationRouteDeps['accept'];
  feed: LiveFeed;
  rateLimit: Config['rateLimit'];
  sse: Config['sse'];
  /** MIN_NOTICE_MINUTES and BOOKING_HORIZON_DAYS (an agent's null settings). */
  bookingDefaults: { minNoticeMinutes: number; horizonDays: number };
  /** Config.trustProxy; default false. */
  trustProxy?: Config['trustProxy'];
  metrics: Metrics;
  /** Extra route plugins registered after the built-in ones (meetings, chat page...). */
  extraRoutes?: Array<(app: FastifyInstance) => Promise<void>>;
}

/** Maps any thrown error to `{"success":false,"error":...}` with the right status; 5xx text is hidden. */
function errorHandler(err: FastifyError, req: FastifyRequest, reply: FastifyReply) {
  if (err instanceof DomainError && err.status < 500) {
    return reply.code(err.status).send({ success: false, error: err.message });
  }
  if (err.validation) {
    const where = err.validationContext ?? 'request';
    const first = err.validation[0];
    const path = first?.instancePath ? first.instancePath.replace(/^\//, '').replaceAll('/', '.') : '';
    const missing = (first?.params as { missingProperty?: string } | undefined)?.missingProperty;
    const field = missing ?? (path || where);
    const detail = missing ? 'is required' : (first?.message ?? 'is invalid');
    return reply
      .code(400)
      .send({ success: false, error: `${where === 'body' ? '' : `${where} `}${field} ${detail}`.trim() });
  }
  // Text the database cannot store (invalid_byte_sequence / untranslatable_character): the input's
  // fault, and the failed statement changed nothing. The preValidation hook refuses NUL before this.
  const sqlState = (err as { code?: unknown }).code;
  if (sqlState === '22021' || sqlState === '22P05') {
    return reply.code(400).send({ success: false, error: 'The request holds text that cannot be stored' });
  }
  const status = err.statusCode && err.statusCode >= 400 ? err.statusCode : 500;
  if (status < 500) {
    // Fastify's own 4xx (bad JSON, wrong content type, body too large...) carry safe messages.
    return reply.code(status).send({ success: false, error: err.message });
  }
  req.log.error({ err }, 'request failed');
  return reply.code(status).send({ success: false, error: 'Internal server error' });
}

/** Nesting a request's JSON may have: our bodies are at most a few levels deep. */
export const MAX_JSON_DEPTH = 32;

/**
 * The path of the first string in `value` (a parsed body, query or params) holding U+0000, in the
 * validation errors' dotted form ('' for `value` itself); undefined when there is none. Throws
 * InvalidInput for a value nested deeper than MAX_JSON_DEPTH (iterative, so no nesting, however
 * deep, can exhaust the stack: a 9 KB body of brackets did, as an unauthenticated 500).
 */
function nulField(value: unknown, where: string): string | undefined {
  const stack: Array<{ value: unknown; path: string; depth: number; nulKey?: boolean }> = [
    { value, path: '', depth: 0 },
  ];
  while (stack.length > 0) {
    const item = stack.pop()!;
    if (item.nulKey) return item.path;
    if (typeof item.value === 'string') {
      if (item.value.includes('\u0000')) return item.path;
      continue;
    }
    if (item.value === null || typeof item.value !== 'object') continue;
    if (item.depth >= MAX_JSON_DEPTH) {
      throw new InvalidInput(`The ${where} is nested too deeply (at most ${MAX_JSON_DEPTH} levels)`);
    }
    // Reversed onto the stack: fields are looked at in order, depth first (the error names the first).
    const entries = Object.entries(item.value);
    for (let i = entries.length - 1; i >= 0; i--) {
      const [key, inner] = entries[i]!;
      const path = item.path ? `${item.path}.${key}` : key;
      stack.push({ value: inner, path, depth: item.depth + 1, nulKey: key.includes('\u0000') });
    }
  }
  return undefined;
}

export async function buildHttpApp(deps: HttpDeps): Promise<FastifyInstance> {
  const trust = deps.trustProxy ?? false;
  // The app is typed as a plain FastifyInstance outside; routes get the TypeBox provider.
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: 256 * 1024,
    requestTimeout: 30_000,
    // Requests that reach a route once the close has begun are refused by our own hook below, in the
    // API's error shape (Fastify's built-in 503 body is not).
    return503OnClosing: false,
    // TRUST_PROXY (Config.trustProxy): off unless set, since direct exposure must not trust
    // X-Forwarded-For; behind a load balancer it names the client, for the per-IP limit and the logs.
    trustProxy: typeof trust === 'number' ? (_address: string, hop: number) => hop < trust : trust,
    // What Node's HTTP parser refuses before any route or hook runs (headers over 16 KB, a malformed
    // request line or header, a request that did not arrive within requestTimeout), in our error
    // shape too; the connection is closed after it, as Node does.
    clientErrorHandler: (err, socket) => {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ECONNRESET' || socket.destroyed) return;
      const [status, error] =
        code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'The request did not arrive in time']
          : code === 'HPE_HEADER_OVERFLOW'
            ? [431, 'The request headers are too large']
            : [400, 'Malformed HTTP request'];
      const body = JSON.stringify({ success: false, error });
      // Not into a response already under way on this connection (a live stream), as Node's own
      // handler does: a kept-alive connection's earlier responses are over and do not count.
      const current = (socket as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
      if (socket.writable && !current?.headersSent) {
        socket.write(
          `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
            `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        );
      }
      socket.destroy(err);
    },
    // Router-level rejections (path parameter over 100 chars, malformed URL) in our error shape too.
    frameworkErrors: (err, _req, reply) => {
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400;
      const message =
        err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'A path parameter is too long' : 'Malformed request URL';
      (reply as FastifyReply).code(status).send({ success: false, error: message });
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Query strings and path params are text, so they are coerced ("50" -> 50); JSON bodies are not:
  // `"access_token": 42` must be a 400, not silently become "42".
  const coercing = addFormats(
    new Ajv({ coerceTypes: 'array', useDefaults: true, removeAdditional: false, strict: false }),
  );
  const strict = addFormats(
    new Ajv({ coerceTypes: false, useDefaults: true, removeAdditional: false, strict: false }),
  );
  app.setValidatorCompiler(({ schema, httpPart }) =>
    (httpPart === 'body' ? strict : coercing).compile(schema),
  );
  app.setErrorHandler(errorHandler);
  // Fastify's JSON parser (prototype poisoning refused, as by default), then one more check: a name
  // given twice in one object is a 400, not the last one silently winning (duplicateKey).
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    parseJson(req, body as string, (err, value) => {
      if (err) return done(err, undefined);
      const twice = duplicateKey(body as string);
      if (twice === undefined) return done(null, value);
      const name = twice.length > 60 ? `${twice.slice(0, 60)}…` : twice;
      done(new InvalidInput(`The body names "${name}" twice in one object`), undefined);
    });
  });
  // PostgreSQL cannot store U+0000 in text, and a statement carrying one fails as a whole: refused
  // here with a 400 naming the field, before any route runs, rather than as a 500 from the database.
  app.addHook('preValidation', async (req) => {
    for (const [where, value] of [
      ['body', req.body],
      ['query', req.query],
      ['params', req.params],
    ] as const) {
      const field = nulField(value, where);
      if (field !== undefined) {
        const name = field || where;
        throw new InvalidInput(
          `${where === 'body' ? name : `${where} ${name}`} must not contain the NUL character (\\u0000)`,
        );
      }
    }
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({ success: false, error: `No route ${req.method} ${req.url.split('?')[0]}` });
  });
  app.addSchema(ErrorBody);

  // Once the close has begun (app.close(): SIGTERM), a request that still reaches a route (pipelined
  // behind one in flight, or sent on a kept-alive connection that was busy) is refused with a 503
  // before anything else runs, and the connection is closed after it (Fastify sets `Connection:
  // close`): a client or load balancer retries it on another process. It was never stored, so
  // nothing is lost. Our preClose hook is the first registered, so it runs before any route's.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (_req, reply) => {
    if (closing) {
      return reply
        .code(503)
        .send({ success: false, error: 'The server is shutting down; retry the request' });
    }
  });

  // Per-IP limit on every request but admin calls (the owner's own tooling is trusted), as the first
  // hook of every request: the route plugins' own onRequest hooks (the admin check) run before any
  // hook the limiter would add to their routes, so a request refused for a wrong admin key would never
  // be counted, and guessing the key would go unthrottled. Pages, docs and unknown paths count too.
  await app.register(rateLimit, {
    global: false,
    max: deps.rateLimit.perIp,
    timeWindow: deps.rateLimit.windowSeconds * 1000,
    allowList: (req) => isAdmin(req, deps.adminKey),
    errorResponseBuilder: (_req, ctx) => ({
      statusCode: 429,
      message: `Too many requests from this address; retry in ${Math.ceil(ctx.ttl / 1000)} s`,
    }),
  });
  app.addHook('onRequest', app.rateLimit());

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'agent-meetings',
        version: '0.1.0',
        description: 'Lets a business’s AI chat agent book Google Calendar meetings with Meet links.',
      },
      components: {
        securitySchemes: {
          admin: { type: 'http', scheme: 'bearer', description: 'ADMIN_API_KEY' },
          customer: {
            type: 'http',
            scheme: 'bearer',
            description: 'The conversation’s customer_token (returned once, when the conversation is opened)',
          },
          customerQuery: {
            type: 'apiKey',
            in: 'query',
            name: 'token',
            description:
              'The customer_token as ?token= (the event stream only: EventSource sends no headers)',
          },
        },
      },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.addHook('onResponse', async (req, reply) => {
    deps.metrics.httpDuration.observe(
      {
        method: req.method,
        route: req.routeOptions.url ?? 'unmatched',
        status_code: String(reply.statusCode),
      },
      reply.elapsedTime / 1000,
    );
  });
  app.get(
    '/metrics',
    {
      schema: { tags: ['operations'], summary: 'Prometheus metrics (admin key)', security: [{ admin: [] }] },
      preHandler: requireAdmin(deps.adminKey),
    },
    async (_req, reply) => {
      reply.header('content-type', deps.metrics.registry.contentType);
      return deps.metrics.registry.metrics();
    },
  );

  await app.register(healthRoutes, { ready: deps.ready });
  await app.register(calendarConnectionRoutes, {
    adminKey: deps.adminKey,
    connections: deps.connections,
    cache: deps.connectionCache,
    now: deps.now,
  });
  await app.register(agentRoutes, {
    adminKey: deps.adminKey,
    agents: deps.agents,
    bookingDefaults: deps.bookingDefaults,
  });
  await app.register(conversationRoutes, {
    adminKey: deps.adminKey,
    agents: deps.agents,
    conversations: deps.conversations,
    messages: deps.messages,
    accept: deps.accept,
    feed: deps.feed,
    perConversation: new WindowCounter(deps.rateLimit.perConversation, deps.rateLimit.windowSeconds * 1000),
    sse: deps.sse,
  });
  for (const routes of deps.extraRoutes ?? []) await app.register(routes);
  return app as unknown as FastifyInstance;
}

import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import type { CalendarGateway } from './domain/calendar-gateway.js';
import { GoogleCalendarGateway, type GoogleCalendarOptions } from './google/google-calendar.js';
import { GoogleTokenProvider } from './google/token-provider.js';
import { buildHttpApp } from './http/app.js';
import { LiveFeed } from './http/live-feed.js';
import { meetingRoutes } from './http/routes/meetings.js';
import { type PageRouteDeps, pageRoutes } from './http/routes/pages.js';
import { webhookRoutes } from './http/routes/webhooks.js';
import type { ChatModel } from './llm/chat-model.js';
import { OpenAIChatModel } from './llm/openai-chat-model.js';
import { createLogger } from './logger.js';
import { Metrics } from './metrics.js';
import { AgentStore } from './store/agents.js';
import { BookingLeaseStore } from './store/booking-leases.js';
import { CalendarConnectionStore } from './store/calendar-connections.js';
import { CalendarSyncStore } from './store/calendar-sync.js';
import { ConnectionCache } from './store/connection-cache.js';
import { ConversationStore } from './store/conversations.js';
import { bossSchemaFor, type Database, type DatabaseOptions, openDatabase } from './store/database.js';
import { MeetingStore } from './store/meetings.js';
import { MessageStore } from './store/messages.js';
import { isMigrated, loadMigrations, migrate } from './store/migrate.js';
import { RESEAL_EVERY_MS, resealSecrets } from './store/reseal.js';
import { SecretBox } from './store/secret-box.js';
import { WebhookStore } from './store/webhooks.js';
import { BookingService } from './worker/booking-service.js';
import { CalendarSync } from './worker/calendar-sync.js';
import { OwnerBookingLock, type OwnerLockOptions } from './worker/owner-lock.js';
import {
  createMessageProcessor,
  createUnreadableAnswer,
  type MessageProcessorDeps,
} from './worker/process-message.js';
import { JobQueue, type QueueSettings } from './worker/queue.js';
import { WebhookDispatcher, type WebhookOptions } from './worker/webhooks.js';

/** api: HTTP only; worker: answers messages only; all: both (the default, one process). */
export type Role = 'api' | 'worker' | 'all';

export interface ApplicationOptions {
  logger?: Logger;
  role?: Role;
  now?: () => Date;
  /** Overrides where the database lives (tests: in-memory PGlite or a private schema). */
  database?: DatabaseOptions;
  /** Tuning of the Google client (tests shorten backoffs). */
  google?: Partial<Pick<GoogleCalendarOptions, 'maxAttempts' | 'backoffBaseMs' | 'conferenceWaitMs'>>;
  /** Replaces the OpenAI adapter (e.g. a different provider). */
  chatModel?: ChatModel;
  /** Chat and meetings pages; only the sandbox (`npm run demo`) passes `sandbox`. */
  pages?: Omit<PageRouteDeps, 'agents'>;
  /** Owner webhook delivery tuning (tests shorten the retry backoff). */
  webhooks?: WebhookOptions;
  /** The owner's booking lock (tests shorten its lease and its wait). */
  ownerLock?: OwnerLockOptions;
  /** Message queue tuning (tests turn the poll off to prove what notifications wake, shorten claims or retry backoffs). */
  queue?: Pick<QueueSettings, 'pollIntervalMs' | 'claimSeconds' | 'retryDelaySeconds'>;
  /** Seconds between passes over an owner's calendar, fractions allowed (tests: a fifth of a second). */
  calendarSyncSeconds?: number;
}

export interface Application {
  readonly config: Config;
  readonly logger: Logger;
  readonly database: Database;
  readonly http: FastifyInstance;
  readonly queue: JobQueue;
  readonly connections: CalendarConnectionStore;
  readonly meetings: MeetingStore;
  readonly calendar: CalendarGateway;
  readonly metrics: Metrics;
  /** Binds the HTTP port (api/all roles). */
  listen(): Promise<string>;
  /** Stops accepting, lets in-flight work finish, closes the database. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Wires one process: config -> database (migrated) -> stores -> adapters -> worker and HTTP. No
 * module-level state: tests build the same graph with emulator URLs and a private database.
 */
export async function createApplication(
  config: Config,
  options: ApplicationOptions = {},
): Promise<Application> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const role = options.role ?? 'all';
  const now = options.now ?? (() => new Date());
  const database = await openDatabase(
    options.database ?? {
      url: config.databaseUrl,
      dataDir: config.dataDir,
      schema: config.databaseSchema,
      poolSize: config.databasePoolSize,
      preparedStatements: config.databasePreparedStatements,
      onDataDirLost: (message) => {
        // Nothing else runs before the exit; pino writes what it buffered on the way out.
        logger.fatal(message);
        process.exit(1);
      },
    },
  );
  const cleanup: Array<() => Promise<void>> = [() => database.close()];
  const runCleanup = async () => {
    for (const step of cleanup.reverse())
      await step().catch((err: unknown) => logger.error({ err }, 'shutdown step failed'));
  };
  try {
    // Read once: /readyz (unauthenticated, probed every few seconds) compares against the same list.
    const migrations = loadMigrations();
    const applied = await migrate(database.db, migrations);
    if (applied.length > 0) logger.info({ applied }, 'database migrated');

    const db = database.db;
    const box = new SecretBox(config.tokenEncryptionKeys);
    // A rotation (several keys, the new one first): what older keys sealed is sealed again under the
    // new one before this process serves, so the older keys can then be removed.
    if (config.tokenEncryptionKeys.length > 1) {
      await resealSecrets(db, box, logger);
      // Again later: processes still on the old configuration (a rolling deploy) keep sealing
      // under the old key, and tokens mid-refresh were left for the next pass. A pass running when
      // the process stops is waited for, before the database closes.
      let pass: Promise<unknown> = Promise.resolve();
      const again = setInterval(() => {
        pass = resealSecrets(db, box, logger).catch((err: unknown) =>
          logger.error({ err }, 're-sealing secrets failed'),
        );
      }, RESEAL_EVERY_MS);
      again.unref();
      cleanup.push(async () => {
        clearInterval(again);
        await pass;
      });
    }
    const connections = new CalendarConnectionStore(db, box);
    const agents = new AgentStore(db);
    const conversations = new ConversationStore(db);
    const messages = new MessageStore(db);
    const meetings = new MeetingStore(db);
    const metrics = new Metrics(() => messages.backlog());

    // Served from memory while fresh, evicted on every change by NOTIFY (API reads and the worker's
    // token lookups alike).
    const connectionCache = new ConnectionCache(database, (userId) => connections.get(userId), {
      onLookup: (result) => metrics.connectionLookups.inc({ result }),
    });
    await connectionCache.start();
    cleanup.push(() => connectionCache.stop());

    const tokens = new GoogleTokenProvider(
      connections,
      {
        clientId: config.google.clientId,
        clientSecret: config.google.clientSecret,
        tokenUrl: config.google.oauthTokenUrl,
        timeoutMs: config.google.timeoutMs,
        now,
        onRefresh: (outcome) => metrics.tokenRefreshes.inc({ outcome }),
        cached: (userId) => connectionCache.get(userId),
      },
      logger,
    );
    // After the queue's jobs (cleanup runs in reverse): a refresh still running in the background
    // stores its token and gives its lease back before the database closes.
    cleanup.push(() => tokens.stop());
    const calendar = new GoogleCalendarGateway(
      tokens,
      {
        rootUrl: config.google.apiRootUrl,
        timeoutMs: config.google.timeoutMs,
        onCall: ({ op, ms, status }) => metrics.upstream('google', op, ms, status),
        ...options.google,
      },
      logger,
    );

    const queue = new JobQueue(
      database,
      {
        retryLimit: config.jobRetryLimit,
        concurrency: config.workerConcurrency,
        historyLimit: config.historyLimit,
        onPickup: (path, count) => metrics.pickups.inc({ path }, count),
        onSlotFreed: (ms) => metrics.slotTime.observe(ms / 1000),
        ...options.queue,
      },
      logger,
    );
    await queue.start();
    cleanup.push(() => queue.stop());

    // Owner webhooks: a pg-boss queue (src/worker/webhooks.ts).
    const webhookStore = new WebhookStore(db, box);
    const webhooks = new WebhookDispatcher(
      queue.boss,
      webhookStore,
      db,
      bossSchemaFor(database.schema),
      logger,
      {
        urls: config.webhookUrls,
        ...options.webhooks,
      },
    );
    await webhooks.start();
    cleanup.push(() => webhooks.stop());
    if (role !== 'api') await webhooks.work();

    // One per process: its holds of an owner queue in this process before they meet in the database.
    // Chat bookings, moves and cancels take it, and so do the owner API's cancels.
    const ownerLock = new OwnerBookingLock(new BookingLeaseStore(db), logger, options.ownerLock);

    if (role !== 'api') {
      const model =
        options.chatModel ??
        new OpenAIChatModel({
          apiKey: config.openai.apiKey,
          baseURL: config.openai.baseUrl,
          timeoutMs: config.openai.timeoutMs,
          maxOutputTokens: config.openai.maxOutputTokens,
          onCall: ({ ms, status }) => metrics.upstream('openai', 'chat.completions', ms, status),
        });
      const booking = new BookingService({
        calendar,
        meetings,
        lock: ownerLock,
        events: webhooks,
        limits: config.booking,
        meetingErrorMessage: config.meetingErrorMessage,
        now,
        onOutcome: (outcome) => metrics.bookings.inc({ outcome }),
        onBusyRead: (kept) => metrics.busyReads.inc({ result: kept ? 'kept' : 'read_again' }),
      });
      const jobOutcome: NonNullable<MessageProcessorDeps['onOutcome']> = (outcome) =>
        metrics.jobs.inc({ outcome });
      const processMessage = createMessageProcessor({
        db,
        messages,
        model,
        defaultModel: config.openai.model,
        horizonDays: config.booking.horizonDays,
        llmErrorMessage: config.llmErrorMessage,
        meetingErrorMessage: config.meetingErrorMessage,
        actions: booking,
        logger,
        onOutcome: jobOutcome,
      });
      await queue.workMessages(
        processMessage,
        createUnreadableAnswer({
          db,
          messages,
          llmErrorMessage: config.llmErrorMessage,
          onOutcome: jobOutcome,
        }),
      );
    }

    // Owners' own changes to our events in Google Calendar (deleted, moved), brought over to the
    // meetings. Worker roles only; the claim in the database keeps processes from repeating a pass.
    const syncEvery = options.calendarSyncSeconds ?? config.calendarSyncSeconds;
    if (role !== 'api' && syncEvery > 0) {
      const sync = new CalendarSync({
        db,
        store: new CalendarSyncStore(db),
        meetings,
        calendar,
        lock: ownerLock,
        events: webhooks,
        logger,
        everySeconds: syncEvery,
        onChange: (change) => metrics.calendarSyncChanges.inc({ change }),
        onPass: (result) => metrics.calendarSyncPasses.inc({ result }),
      });
      sync.start();
      cleanup.push(() => sync.stop());
    }

    const feed = new LiveFeed(database);
    if (role !== 'worker') await feed.start();
    cleanup.push(() => feed.stop());

    const http = await buildHttpApp({
      logger,
      adminKey: config.adminApiKey,
      now,
      ready: async () => {
        await database.ping();
        return isMigrated(database.db, migrations);
      },
      connections,
      connectionCache,
      agents,
      conversations,
      messages,
      // Claims the message for this process's worker when it has a free slot (role all); stores it
      // for the workers otherwise (role api: this process works no messages).
      accept: (conversationId, content, access) => queue.accept(conversationId, content, access),
      feed,
      rateLimit: config.rateLimit,
      sse: config.sse,
      bookingDefaults: config.booking,
      trustProxy: config.trustProxy,
      metrics,
      extraRoutes: [
        async (app) => {
          await app.register(meetingRoutes, {
            adminKey: config.adminApiKey,
            meetings,
            calendar,
            lock: ownerLock,
            db,
            events: webhooks,
          });
          await app.register(webhookRoutes, {
            adminKey: config.adminApiKey,
            webhooks: webhookStore,
            webhookUrls: config.webhookUrls,
          });
          await app.register(pageRoutes, { agents, ...options.pages });
        },
      ],
    });
    cleanup.push(() => http.close());

    let stopping: Promise<void> | undefined;
    return {
      config,
      logger,
      database,
      http,
      queue,
      connections,
      meetings,
      calendar,
      metrics,
      async listen() {
        if (role === 'worker') return 'worker (no HTTP)';
        return http.listen({ port: config.port, host: config.host });
      },
      stop() {
        // Order (reverse of creation): HTTP stops accepting and drains, the feed closes, the queue
        // lets running jobs finish (unfinished ones return to the queue), then the database closes.
        stopping ??= runCleanup();
        return stopping;
      },
    };
  } catch (err) {
    await runCleanup();
    throw err;
  }
}

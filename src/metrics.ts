import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Prometheus metrics of one process (`GET /metrics`). One registry per application instance, so
 * several instances in one test process never share counters.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly httpDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request latency by route',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  readonly jobs = new Counter({
    name: 'message_jobs_total',
    help: 'Customer-message jobs by outcome (answered, failed = fallback reply sent, retry, skipped = a stale run stopped: another claim answers)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly pickups = new Counter({
    name: 'queue_pickups_total',
    help: "Customer messages this process's worker took, by how: claimed by the POST's own insert when a slot was free (insert) or by a claim statement (claim)",
    labelNames: ['path'] as const,
    registers: [this.registry],
  });

  readonly slotTime = new Histogram({
    name: 'worker_slot_seconds',
    help: "How long each customer-message job held one of this process's WORKER_CONCURRENCY worker slots, from its claim's (or its insert's) return to its end (its reply committed, or its claim given back). sum / count is the mean time a job holds a slot: with every slot busy, the worker answers WORKER_CONCURRENCY / that mean messages per second",
    buckets: [0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });

  readonly connectionLookups = new Counter({
    name: 'connection_cache_lookups_total',
    help: "Lookups of owners' calendar connections through this process's cache: served from memory or a read in flight (hit), or read from the database (miss)",
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly bookings = new Counter({
    name: 'booking_outcomes_total',
    help: 'Booking actions by outcome (booked, booked_existing, invalid, limit, not_connected, revoked, google_error)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly busyReads = new Counter({
    name: 'booking_busy_reads_total',
    help: "Bookings' Google freeBusy reads sent alongside the lease statement, by whether the read was kept (kept) or Google was read again after the lease because a hold of the owner ended meanwhile (read_again)",
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly calendarSyncPasses = new Counter({
    name: 'calendar_sync_passes_total',
    help: "Passes over an owner's calendar for our events they deleted or moved, by result (synced; deferred: a change in a conversation with a message in flight, read again at the next pass; failed: read again at the next pass)",
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly calendarSyncChanges = new Counter({
    name: 'calendar_sync_changes_total',
    help: 'Meetings changed because the owner changed their event in Google Calendar: cancelled (deleted there) or moved',
    labelNames: ['change'] as const,
    registers: [this.registry],
  });

  readonly upstreamDuration = new Histogram({
    name: 'upstream_request_duration_seconds',
    help: 'Google and OpenAI call latency by service, operation and status',
    labelNames: ['service', 'op', 'status'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  readonly upstreamErrors = new Counter({
    name: 'upstream_errors_total',
    help: 'Failed Google and OpenAI calls by service, operation and status',
    labelNames: ['service', 'op', 'status'] as const,
    registers: [this.registry],
  });

  readonly tokenRefreshes = new Counter({
    name: 'google_token_refreshes_total',
    help: 'Google access-token refreshes by outcome (refreshed, revoked, failed)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  constructor(queueProbe?: () => Promise<{ depth: number; oldestSeconds: number }>) {
    collectDefaultMetrics({ register: this.registry });
    if (queueProbe) {
      // Read at scrape time: the database is the truth, whichever process answers the scrape.
      let last: Promise<{ depth: number; oldestSeconds: number }> | undefined;
      const probe = () => {
        last ??= queueProbe().finally(() => {
          last = undefined;
        });
        return last;
      };
      new Gauge({
        name: 'queue_depth',
        help: 'Customer messages waiting for an answer',
        registers: [this.registry],
        async collect() {
          this.set((await probe()).depth);
        },
      });
      new Gauge({
        name: 'queue_oldest_age_seconds',
        help: 'Age of the oldest customer message still waiting for an answer',
        registers: [this.registry],
        async collect() {
          this.set((await probe()).oldestSeconds);
        },
      });
    }
  }

  upstream(service: 'google' | 'openai', op: string, ms: number, status: number | string): void {
    const labels = { service, op, status: String(status) };
    this.upstreamDuration.observe(labels, ms / 1000);
    if (status !== 'ok' && status !== 200 && status !== '200') this.upstreamErrors.inc(labels);
  }
}

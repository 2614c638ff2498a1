import { Agent, request } from 'node:http';
import { messageText } from '../test/emulators/openai.js';
import {
  BENCH_HORIZON_DAYS,
  type BenchOwner,
  type BenchStack,
  createOwner,
  eachLimited,
  json,
  openConversation,
} from './setup.js';
import { cpuMeter, round, summarize, throughputLimit, zeroOverheadEnd } from './stats.js';

export interface PipelineResult {
  offered_per_s: number;
  bookings: number;
  send_errors: number;
  /** Accepted but not answered 60 s after the calendar stopped seeing new bookings. */
  unanswered: number;
  confirmed: number;
  bookings_per_s: number;
  /** Upper bound the emulators' latencies allow at this load (stats.ts throughputLimit). */
  limit_per_s: number;
  /**
   * What bookings_per_s would read for this very run on code that costs nothing: the same sends, each
   * holding a worker slot for exactly its own emulator time (stats.ts zeroOverheadEnd).
   */
  zero_overhead_per_s: number;
  /** bookings_per_s as a share of zero_overhead_per_s. */
  of_zero_overhead_pct: number;
  e2e_p50_ms: number;
  e2e_p99_ms: number;
  emulator_p50_ms: number;
  overhead_p50_ms: number;
  overhead_p99_ms: number;
  pickup_p50_ms: number;
  pickup_p99_ms: number;
  peak_rss_mb: number;
  /**
   * Where end-to-end ends: `visible` (server: this process received the NOTIFY the reply's commit
   * sends, as any client would learn of it), or `created_at` (embedded: the reply's stored timestamp,
   * its transaction's start, so the reply's own write and commit are not counted).
   */
  e2e_end: 'visible' | 'created_at';
  owners: number;
  refreshes_per_owner: string;
  /**
   * Bookings' freeBusy reads sent alongside the lease statement during the load, and the share of them
   * kept (the rest were read again under the lease: a hold of the owner ended meanwhile). From the
   * service's /metrics; null with --workers (the worker processes serve no HTTP).
   */
  busy_reads: number | null;
  busy_reads_kept_pct: number | null;
  /**
   * The measured jobs' mean time in a worker slot (the service's worker_slot_seconds), and the slots'
   * use over the load: their time over slots x (first send to last answer). With every slot busy,
   * bookings/s = slots / slot time. Null with --workers.
   */
  slot_ms_mean: number | null;
  slot_busy_pct: number | null;
  /**
   * slot_ms_mean minus the bookings' mean emulator time: our own time inside a worker slot per
   * booking (mean), the part of the slots' bound on throughput that is ours.
   */
  slot_overhead_ms: number | null;
  cpu_service_pct: number;
  cpu_bench_pct: number;
  cpu_postgres_pct: number;
  /** Where the overhead goes: p50 and p99 of each stage in ms (see bench/README.md). */
  stages: Record<string, { p50: number; p99: number }>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * How far after a booking's requested start BookingService reads busy time (its search window of 14
 * days plus the longest meeting, 8 h; src/worker/booking-service.ts #window): how a freeBusy request
 * is matched to its booking.
 */
const READ_AFTER_START_MS = 14 * 86_400_000 + 480 * 60_000;

/** Warm-up bookings per second at most (with as many owners of their own). */
const WARMUP_RATE = 20;

interface Booking {
  idx: number;
  conversationId: string;
  token: string;
  owner: number;
  messageId?: string;
  sentAt?: number;
  askedAt?: number;
  /** The reply's created_at (its transaction's start, database clock). */
  answeredAt?: number;
  /** When the reply's commit was seen (server: its NOTIFY reached the bench), else answeredAt. */
  visibleAt?: number;
  answer?: string;
  /** The POST failed (connection refused or timed out, or an error status). */
  sendError?: string;
  /** The model request's arrival and answer (bench clock). */
  modelCalls: Array<{ at: number; doneAt: number }>;
}

/**
 * Open-loop load: `rate` customer messages per second for `durationS`, each in its own conversation
 * and asking the (emulated) model to book. Everything goes through the service's HTTP API; the
 * timestamps of the question and the answer are the ones the service stored (database clock, read
 * back through the API after the run, so reading them costs the service nothing while it works).
 *
 * Overhead is measured per booking: end-to-end minus the time this booking spent inside the
 * emulators (its model call, the owner's token refresh while it waited for it, its freeBusy and its
 * events.insert — matched through the account each Calendar request authenticated as).
 */
export async function runPipeline(
  stack: BenchStack,
  opts: {
    rate: number;
    durationS: number;
    owners: number;
    warmupS: number;
    slots: number;
    /**
     * The owners' access tokens expire this long after they are created (default 30 s): inside the
     * service's 5-minute refresh margin, so each owner's token must be refreshed exactly once however
     * many bookings race for it. Under a minute left (the service's wait margin), the first booking
     * of each owner waits for that refresh, as an owner's first booking after an idle hour does; with
     * more (e.g. 120), the service refreshes in the background and no booking waits.
     */
    tokenExpiryS?: number;
  },
): Promise<PipelineResult> {
  // Each booking asks for its own hour, from a day ahead (see the responder below): a longer load would
  // ask for times past the horizon, refused with a text reply (a cheaper path, measuring nothing).
  const hours = Math.round(opts.rate * opts.durationS);
  if (hours + 24 > BENCH_HORIZON_DAYS * 24) {
    throw new Error(
      `a load of ${hours} bookings asks for times past the ${BENCH_HORIZON_DAYS}-day horizon: lower --duration or the load`,
    );
  }
  const tag = Math.random().toString(36).slice(2, 8);
  const tokenExpiryS = opts.tokenExpiryS ?? 30;
  const owners = await createOwners(stack, `bench-${tag}`, opts.owners, tokenExpiryS);
  const bookings = await openConversations(
    stack,
    owners,
    Math.max(1, Math.round(opts.rate * opts.durationS)),
  );

  // The emulated model answers every message with a booking action, one hour apart per booking so
  // that no two bookings of an owner overlap (availability would refuse them). Warm-up bookings
  // ("w<n>") have owners of their own, so their hours may repeat the measured ones; their customers
  // differ. Every hour lies inside the booking horizon (BENCH_HORIZON_DAYS, checked above).
  const base = Date.now() + 86_400_000;
  const warm: Booking[] = [];
  stack.openai.responder = (req) => {
    const doneAt = Date.now();
    const last = [...req.messages].reverse().find((m) => m.role === 'user');
    const [, kind, n] = /(#|w)(\d+)/.exec(messageText(last?.content)) ?? [];
    const idx = Number(n);
    const b = kind === 'w' ? warm[idx] : bookings[idx];
    b?.modelCalls.push({ at: doneAt - stack.openai.latencyMs, doneAt });
    const customer = kind === 'w' ? `w${idx}` : `c${idx}`;
    const when = new Date(base + idx * 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    return {
      content: `Booking it.\n[{"action":"Time_to_121meet","name":"Bench ${idx}","email":"${customer}@bench.test","title":"Bench","participants":[],"meeting_time":"${when}","friendly_time":"soon"}]`,
    };
  };

  // Warm-up, on owners of its own: a freshly started process runs its code unoptimized at first
  // (V8 compiles hot functions after many calls), which is start-up cost, not steady-state
  // overhead. The measured load starts once every warm-up booking was answered.
  // Counted from here (a stack may have run an earlier load).
  stack.google.requests.length = 0;
  if (opts.warmupS > 0) {
    const warmOwners = await createOwners(stack, `warm-${tag}`, WARMUP_RATE, tokenExpiryS);
    warm.push(...(await openConversations(stack, warmOwners, Math.round(WARMUP_RATE * opts.warmupS))));
    await send(stack, warm, WARMUP_RATE, 'w');
    const sent = warm.filter((b) => b.messageId !== undefined).length;
    await waitForInserts(stack, sent);
    // A warm-up that books nothing warms only the model half of the path (the booking, the token
    // refresh and both Calendar calls would run cold in the measured load): refuse to go on.
    const booked = new Set(attendeesInserted(stack, 'w')).size;
    if (booked < sent) throw new Error(`warm-up: ${booked} of ${sent} bookings reached Google Calendar`);
    // The last replies commit after their inserts.
    await sleep(1000);
  }
  stack.google.requests.length = 0;

  const countsBefore = await serviceCounts(stack);
  const cpu = cpuMeter(stack.pids());
  const started = Date.now();
  await send(stack, bookings, opts.rate, '#');

  // Wait without touching the service: until Google saw one insert per booking (or nothing moved
  // for a while), then read every conversation back once, and again for any still unanswered.
  const accepted = bookings.filter((b) => b.messageId !== undefined);
  await waitForInserts(stack, accepted.length);
  const cpuUse = cpu.stop();
  const deadline = Date.now() + 60_000;
  for (;;) {
    const open = accepted.filter((b) => b.answeredAt === undefined);
    // Past the deadline, what is still unanswered is reported as such (an overloaded run).
    if (open.length === 0 || Date.now() > deadline) break;
    await eachLimited(open, 8, async (b) => {
      const { messages } = await json<{
        messages: Array<{ message_id: string; role: string; content: string; created_at: string }>;
      }>(
        await fetch(`${stack.baseUrl}/api/conversations/${b.conversationId}/messages`, {
          headers: { authorization: `Bearer ${b.token}` },
        }),
      );
      const asked = messages.find((m) => m.message_id === b.messageId);
      const answer = messages.find((m) => m.role === 'assistant');
      if (asked && answer) {
        b.askedAt = Date.parse(asked.created_at);
        b.answeredAt = Date.parse(answer.created_at);
        b.answer = answer.content;
      }
    });
    if (accepted.some((b) => b.answeredAt === undefined)) await sleep(250);
  }
  // Each job gives its slot back just after its reply commits.
  await sleep(200);
  const countsAfter = await serviceCounts(stack);
  const peakRss = stack.peakRss();
  // The reply's NOTIFY is the conversation's second (the first announced the customer message).
  // Used only when every answered booking's was seen, so the figures never mix both ends.
  const replyNotice = (b: Booking) => stack.notices?.get(b.conversationId)?.[1];
  const visible = accepted.every((b) => b.answeredAt === undefined || replyNotice(b) !== undefined);
  for (const b of accepted) b.visibleAt = visible ? replyNotice(b) : b.answeredAt;

  // Emulator time per booking. An owner's bookings at different times run at once (the owner's lease
  // is per time range), so a booking's freeBusy is found by its window, not by order: BookingService
  // reads busy time up to READ_AFTER_START_MS after the requested start (bench agents have no
  // buffer), and each booking here has its own hour. The insert names the customer as attendee.
  // `token`: the access token a Calendar call carried, or the one a refresh issued.
  type Interval = { at: number; doneAt: number; token?: string };
  const spentIn = (c: Interval | undefined) => (c ? c.doneAt - c.at : 0);
  // Per booking: its last freeBusy and insert (for the stages), and the Calendar time of all its tries.
  const calls = new Map<number, { freeBusy?: Interval; insert: Interval; spent: number }>();
  const freeBusyOf = new Map<string, Interval>(); // `${account} ${hour index}` -> its latest freeBusy
  const refreshes = new Map<string, Interval[]>();
  const ownerByRefresh = new Map(owners.map((o) => [o.refreshToken, o.email]));
  for (const r of [...stack.google.requests].sort((a, b) => a.at - b.at)) {
    // A request never answered counts as no time.
    const call: Interval = { at: r.at, doneAt: r.doneAt ?? r.at, token: r.accessToken };
    if (r.op === 'token') {
      const email = ownerByRefresh.get((r.body as Record<string, string> | undefined)?.refresh_token ?? '');
      if (email) refreshes.set(email, [...(refreshes.get(email) ?? []), call]);
    } else if (r.op === 'freebusy.query' && r.account) {
      const timeMax = Date.parse(String((r.body as { timeMax?: unknown } | undefined)?.timeMax));
      const hourIndex = Math.round((timeMax - READ_AFTER_START_MS - base) / 3_600_000);
      freeBusyOf.set(`${r.account} ${hourIndex}`, call);
    } else if (r.op === 'events.insert' && r.account) {
      const attendees = (r.body as { attendees?: Array<{ email?: string }> } | undefined)?.attendees ?? [];
      const idx = attendees.map((a) => /^c(\d+)@bench\.test$/.exec(a.email ?? '')?.[1]).find(Boolean);
      if (idx === undefined) continue;
      const key = `${r.account} ${idx}`;
      const freeBusy = freeBusyOf.get(key);
      const before = calls.get(Number(idx))?.spent ?? 0;
      calls.set(Number(idx), { freeBusy, insert: call, spent: before + spentIn(freeBusy) + spentIn(call) });
      freeBusyOf.delete(key);
    }
  }
  const e2e: number[] = [];
  const overhead: number[] = [];
  const emulator: number[] = [];
  const replay: Array<{ sentAt: number; emulatorMs: number }> = [];
  const pickup: number[] = [];
  const stage: Record<string, number[]> = {
    http_store: [],
    pickup: [],
    model_to_freebusy: [],
    freebusy_to_insert: [],
    insert_to_reply: [],
    // Reply's transaction start -> its commit seen (server only, see e2e_end).
    ...(visible && stack.notices ? { reply_visible: [] } : {}),
  };
  let lastAnswer = 0;
  let confirmed = 0;
  const answeredOnes = accepted.filter((b) => b.answeredAt !== undefined);
  for (const b of answeredOnes) {
    const answered = b.visibleAt!;
    lastAnswer = Math.max(lastAnswer, answered);
    const total = answered - b.sentAt!;
    const model = b.modelCalls.reduce((s, c) => s + (c.doneAt - c.at), 0);
    // The owner's refresh, for the part of it this booking waited through (after its model answer):
    // only a refresh whose token the booking's Calendar calls carried. One that ran in the background
    // while the booking used the token it had (the service refreshes ahead) kept nobody waiting.
    const modelDone = b.modelCalls.at(-1)?.doneAt ?? b.sentAt!;
    const c = calls.get(b.idx);
    const refresh = (refreshes.get(owners[b.owner]!.email) ?? [])
      .filter((r) => r.token !== undefined && r.token === c?.freeBusy?.token)
      .reduce((s, r) => s + Math.max(0, Math.min(r.doneAt, answered) - Math.max(r.at, modelDone)), 0);
    const spent = model + refresh + (c?.spent ?? 0);
    e2e.push(total);
    emulator.push(spent);
    replay.push({ sentAt: b.sentAt!, emulatorMs: spent });
    overhead.push(total - spent);
    if (b.answer?.includes('✅ Meeting confirmed!')) confirmed++;
    else if (process.env.BENCH_DEBUG)
      process.stderr.write(`not confirmed: ${JSON.stringify(b.answer?.slice(0, 300))}\n`);
    // Pickup: message stored -> the model request reached the emulator.
    if (b.modelCalls[0] && b.askedAt !== undefined) pickup.push(b.modelCalls[0].at - b.askedAt);
    // Stages of the booking (its emulator calls excluded).
    if (c?.freeBusy && b.modelCalls.length === 1 && b.askedAt !== undefined) {
      stage.http_store!.push(b.askedAt - b.sentAt!);
      stage.pickup!.push(b.modelCalls[0]!.at - b.askedAt);
      // Minus the token refresh this booking waited for (emulator time, not ours).
      stage.model_to_freebusy!.push(c.freeBusy.at - modelDone - refresh);
      stage.freebusy_to_insert!.push(c.insert.at - c.freeBusy.doneAt);
      stage.insert_to_reply!.push(b.answeredAt! - c.insert.doneAt);
      stage.reply_visible?.push(answered - b.answeredAt!);
    }
  }
  const e = summarize(e2e);
  const o = summarize(overhead);
  const em = summarize(emulator);
  const limit = throughputLimit({
    offeredPerS: opts.rate,
    slots: opts.slots,
    emulatorMeanMs: em.mean,
  });
  const perS = (end: number) => answeredOnes.length / ((end - started) / 1000);
  const bookingsPerS = perS(lastAnswer);
  const zeroOverheadPerS = perS(zeroOverheadEnd(replay, opts.slots));
  const p = summarize(pickup);
  const refreshCounts = owners.map((o) => stack.google.refreshCount(o.refreshToken));
  return {
    offered_per_s: opts.rate,
    bookings: bookings.length,
    send_errors: bookings.length - accepted.length,
    unanswered: accepted.length - answeredOnes.length,
    confirmed,
    bookings_per_s: round(bookingsPerS),
    limit_per_s: round(limit),
    zero_overhead_per_s: round(zeroOverheadPerS),
    of_zero_overhead_pct: round((100 * bookingsPerS) / zeroOverheadPerS),
    e2e_p50_ms: round(e.p50),
    e2e_p99_ms: round(e.p99),
    emulator_p50_ms: round(em.p50),
    overhead_p50_ms: round(o.p50),
    overhead_p99_ms: round(o.p99),
    pickup_p50_ms: round(p.p50),
    pickup_p99_ms: round(p.p99),
    peak_rss_mb: round(peakRss / 1024 / 1024, 0),
    // Every answered booking's commit must have been seen, or the figures would mix both ends.
    e2e_end: visible && stack.notices ? 'visible' : 'created_at',
    owners: owners.length,
    refreshes_per_owner: [...new Set(refreshCounts)].join('/'),
    ...readShares(countsBefore, countsAfter),
    ...slotUse(countsBefore, countsAfter, opts.slots, lastAnswer - started, em.mean),
    ...(cpuUse as { cpu_service_pct: number; cpu_bench_pct: number; cpu_postgres_pct: number }),
    stages: Object.fromEntries(
      Object.entries(stage).map(([k, v]) => {
        const s = summarize(v);
        return [k, { p50: round(s.p50), p99: round(s.p99) }];
      }),
    ),
  };
}

/** What the bench reads from the service's /metrics (null with --workers: workers serve no HTTP). */
type ServiceCounts = {
  /** freeBusy reads sent alongside the lease statement, kept or read again (src/metrics.ts busyReads). */
  kept: number;
  readAgain: number;
  /** worker_slot_seconds: the jobs' total time in a worker slot, and how many jobs. */
  slotSeconds: number;
  slotJobs: number;
} | null;

async function serviceCounts(stack: BenchStack): Promise<ServiceCounts> {
  if (stack.workers.length > 0) return null;
  const res = await fetch(`${stack.baseUrl}/metrics`, {
    headers: { authorization: `Bearer ${stack.adminKey}` },
  });
  if (!res.ok) throw new Error(`GET /metrics: ${res.status}`);
  const body = await res.text();
  const read = (series: string) => {
    const m = new RegExp(`^${series.replace(/[{}]/g, '\\$&')} ([\\d.e+-]+)$`, 'm').exec(body);
    return m ? Number(m[1]) : 0;
  };
  return {
    kept: read('booking_busy_reads_total{result="kept"}'),
    readAgain: read('booking_busy_reads_total{result="read_again"}'),
    slotSeconds: read('worker_slot_seconds_sum'),
    slotJobs: read('worker_slot_seconds_count'),
  };
}

function readShares(before: ServiceCounts, after: ServiceCounts) {
  if (!before || !after) return { busy_reads: null, busy_reads_kept_pct: null };
  const kept = after.kept - before.kept;
  const total = kept + after.readAgain - before.readAgain;
  return { busy_reads: total, busy_reads_kept_pct: total === 0 ? null : round((100 * kept) / total) };
}

/**
 * The measured jobs' mean time in a worker slot, and how busy the slots were over the load (their
 * jobs' time over slots x the load's duration, first send to last answer).
 */
function slotUse(
  before: ServiceCounts,
  after: ServiceCounts,
  slots: number,
  durationMs: number,
  emulatorMeanMs: number,
) {
  if (!before || !after || after.slotJobs === before.slotJobs)
    return { slot_ms_mean: null, slot_busy_pct: null, slot_overhead_ms: null };
  const seconds = after.slotSeconds - before.slotSeconds;
  const mean = (1000 * seconds) / (after.slotJobs - before.slotJobs);
  return {
    slot_ms_mean: round(mean),
    slot_busy_pct: round((100 * 1000 * seconds) / (slots * durationMs)),
    slot_overhead_ms: round(mean - emulatorMeanMs),
  };
}

/** The bench customers (`w<n>` or `c<n>`) of the events Google inserted so far, repeats included. */
export function attendeesInserted(stack: BenchStack, kind: 'w' | 'c'): number[] {
  const pattern = new RegExp(`^${kind}(\\d+)@bench\\.test$`);
  return stack.google.requests
    .filter((r) => r.op === 'events.insert' && r.doneAt)
    .flatMap((r) => (r.body as { attendees?: Array<{ email?: string }> } | undefined)?.attendees ?? [])
    .map((a) => pattern.exec(a.email ?? '')?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number);
}

/** Waits until Google saw `count` event inserts, or nothing moved for 20 s. */
async function waitForInserts(stack: BenchStack, count: number) {
  const inserts = () => stack.google.requests.filter((r) => r.op === 'events.insert' && r.doneAt).length;
  let seen = -1;
  let still = Date.now();
  while (inserts() < count && Date.now() - still < 20_000) {
    if (inserts() !== seen) {
      seen = inserts();
      still = Date.now();
    }
    await sleep(50);
  }
}

/** `count` owners, each with a Google connection (its token expiring in `expiryS`) and an agent. */
async function createOwners(
  stack: BenchStack,
  prefix: string,
  count: number,
  expiryS: number,
): Promise<BenchOwner[]> {
  const owners: BenchOwner[] = [];
  for (let i = 0; i < count; i++) {
    owners.push(await createOwner(stack, `${prefix}-${i}`, { accessTokenExpiresInSeconds: expiryS }));
  }
  return owners;
}

/** `count` conversations, spread round-robin over `owners`. */
async function openConversations(stack: BenchStack, owners: BenchOwner[], count: number): Promise<Booking[]> {
  const bookings: Booking[] = [];
  for (let i = 0; i < count; i++) {
    const owner = i % owners.length;
    const c = await openConversation(stack, owners[owner]!.agentId);
    bookings.push({
      idx: i,
      conversationId: c.conversation_id,
      token: c.customer_token,
      owner,
      modelCalls: [],
    });
  }
  return bookings;
}

/**
 * POSTs JSON over node:http with a keep-alive agent and resolves with the parsed answer (rejects on a
 * non-2xx status). The load generator's sends use it rather than fetch: fetch spends ~0.4 ms more
 * of the bench process's time between the send's timestamp and the request's bytes leaving
 * (measured against a bare Fastify route: send to handler p50 0.77–0.87 ms with fetch, 0.36–0.46 ms
 * with node:http), which the figures would count as the service's overhead.
 */
function postJson<T>(agent: Agent, url: URL, headers: Record<string, string>, body: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        method: 'POST',
        path: url.pathname,
        headers: {
          ...headers,
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(body)),
        },
        agent,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status < 200 || status > 299) reject(new Error(`${status} ${text}`));
          else {
            try {
              resolve(JSON.parse(text) as T);
            } catch (err) {
              reject(err);
            }
          }
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Open loop: one booking request every 1/rate s, whatever the answers; failures are recorded. */
async function send(stack: BenchStack, bookings: Booking[], rate: number, mark: '#' | 'w') {
  const agent = new Agent({ keepAlive: true });
  const started = Date.now();
  const sends: Promise<void>[] = [];
  for (const b of bookings) {
    const due = started + (b.idx * 1000) / rate;
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait);
    b.sentAt = Date.now();
    sends.push(
      postJson<{ message_id: string }>(
        agent,
        new URL(`${stack.baseUrl}/api/conversations/${b.conversationId}/messages`),
        { authorization: `Bearer ${b.token}` },
        JSON.stringify({ content: `please book ${mark}${b.idx}` }),
      ).then(
        (r) => {
          b.messageId = r.message_id;
        },
        (err: unknown) => {
          // Counted, not fatal: an overloaded service refusing or timing out is a result too.
          b.sendError = String((err as Error)?.message ?? err);
        },
      ),
    );
  }
  await Promise.all(sends);
  agent.destroy();
}

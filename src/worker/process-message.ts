import type { Kysely, RawBuilder, Transaction } from 'kysely';
import type { Logger } from 'pino';
import {
  extractBookingActions,
  holdsUnreadableAction,
  wellFormed,
  withoutControls,
} from '../domain/booking-action.js';
import { Upstream } from '../domain/errors.js';
import { OWN_CONFIRMATION } from '../domain/messages.js';
import {
  BOOKING_ACTION,
  bookingToolParameters,
  buildSystemPrompt,
  CANCEL_ACTION,
  CHECK_AVAILABILITY,
  cancelParameters,
  checkAvailabilityParameters,
  MEETING_ACTIONS,
  meetingToolInstructions,
  RESCHEDULE_ACTION,
  rescheduleParameters,
} from '../domain/prompt.js';
import type { ChatModel, ChatResult, ChatTurn, ToolDefinition } from '../llm/chat-model.js';
import {
  type MessageStore,
  type MessageWork,
  modelOutputCte,
  type ReplyRows,
  type StoredReply,
} from '../store/messages.js';
import type { DB, StoredModelOutput } from '../store/schema.js';
import type { JobContext, JobOutcome, UnreadableHandler } from './queue.js';

/**
 * The reply to send, and what must be committed together with it (e.g. the meeting row). Either
 * `write` (the rows join the reply's own statement: one round trip, one commit) or `persist` (a transaction
 * around the reply's statement and the rows' own), or neither (the reply alone).
 */
export interface Reply {
  text: string;
  /**
   * Writes the reply through `store`, giving it the rows to add to its statement (ReplyRows); resolves
   * with what `store` returned once that statement committed (with its transaction, if any).
   */
  write?: (store: (rows: ReplyRows) => Promise<StoredReply>) => Promise<StoredReply>;
  /** Writes rows in the reply's transaction, after the reply, only if this attempt's reply was stored. */
  persist?: (trx: Transaction<DB>) => Promise<void>;
  /**
   * Runs once the reply's write is over, saying whether it committed (releases the owner's booking
   * lock; `write` or `persist` gave its lease back in that commit).
   */
  done?: ((committed: boolean) => Promise<void>) | undefined;
}

/** What a responder knows about the job attempt it runs in. */
export interface RespondOptions {
  /**
   * No retry follows: a failure now ends with MEETING_ERROR_MESSAGE (see JobContext.isLastAttempt),
   * unless what an action made at Google cannot be read (OutcomeUnknown: the message runs again).
   */
  lastAttempt?: boolean;
  /**
   * The model output the actions come from, when this attempt asked the model (an earlier attempt's
   * is stored already). It must be stored before anything acts on it outside the database, so that a
   * retry acts on the same output: the responder stores it with the owner's booking lease (`cte`),
   * which it takes before any change.
   */
  unsavedOutput?: UnsavedOutput;
  /**
   * The output was stored by an earlier attempt of this message, which may have acted on it already
   * (made a Google event whose reply never committed): a refusal checks for that event first.
   */
  earlierAttempt?: boolean;
  /**
   * The run's signal (JobContext.signal): once aborted (its claim is no longer its own, the process is
   * stopping, the run took too long) the responder makes no further change at Google.
   */
  signal?: AbortSignal;
}

/** A model output not yet stored (see RespondOptions.unsavedOutput). */
export interface UnsavedOutput {
  /** modelOutputCte for this message and claim (src/store/messages.ts). */
  readonly cte: RawBuilder<unknown>;
}

/**
 * This attempt may not act: another claim took its message over (its own claim lapsed while it ran)
 * or answered it, so the output it got is not the one the message is answered from. The run ends
 * without a reply; the queue gives its claim back as after any failure, which is a no-op once another
 * claim holds the message or it is answered, and the current claim answers it. Never a fallback
 * reply: that would close the message under the attempt that is booking.
 */
export class StaleAttempt extends Error {
  constructor(message = 'another claim of this message took it over; this attempt acts on nothing') {
    super(message);
    this.name = 'StaleAttempt';
  }
}

/**
 * Whether an action's change was made at Google is not known: the attempt is giving up (its last, or
 * Google refused), and the lookup that would tell (an insert whose answer was lost may have made the
 * event and sent its invitations) failed too. Not answered now, neither confirmed nor denied: the
 * run ends without a reply and the message runs again (on its last attempt, as a last attempt: its
 * re-runs are bounded, and the run that gives up looks once more before its fallback).
 */
export class OutcomeUnknown extends Upstream {
  /** `retryAfterMs`: the longest wait Google asked for, in the failure or in the lookup's. */
  constructor(message: string, options: { cause: unknown; retryAfterMs?: number | undefined }) {
    super(message, true, options);
  }
}

/** Turns booking actions into a reply (src/worker/booking-service.ts). */
export interface ActionResponder {
  respond(
    work: MessageWork,
    actions: unknown[],
    prose: string,
    log: Logger,
    options?: RespondOptions,
  ): Promise<Reply>;
  /**
   * The answer to a message given up on (JobContext.giveUp) from its stored output: what earlier
   * attempts did at Google and never recorded (BookingService.recover). Undefined when nothing was
   * found: the message gets the fallback. Absent = always the fallback.
   */
  recover?(
    work: MessageWork,
    actions: unknown[],
    prose: string,
    log: Logger,
    signal?: AbortSignal,
  ): Promise<Reply | undefined>;
  /** The check_availability tool's result (JSON text for the model); absent = no such tool. */
  checkAvailability?(work: MessageWork, args: unknown, log: Logger): Promise<string>;
  /** Extra system-prompt lines (the conversation's meetings, for reschedule/cancel), from `work`. */
  promptContext?(work: MessageWork): string;
}

export interface MessageProcessorDeps {
  db: Kysely<DB>;
  messages: MessageStore;
  model: ChatModel;
  defaultModel: string;
  /**
   * How far ahead meetings may be booked when the agent sets no horizon (BOOKING_HORIZON_DAYS): the
   * prompt names the zone's offset changes within the agent's horizon. Default 90.
   */
  horizonDays?: number;
  llmErrorMessage: string;
  meetingErrorMessage: string;
  actions: ActionResponder;
  logger: Logger;
  onOutcome?: (outcome: 'answered' | 'failed' | 'retry' | 'skipped') => void;
  /** Model calls answered with a tool result (check_availability) before it must answer (default 3). */
  maxToolRounds?: number;
}

const tool = (name: string, description: string, parameters: unknown): ToolDefinition => ({
  name,
  description,
  parameters: parameters as Record<string, unknown>,
});
const BOOKING_TOOL = tool(
  BOOKING_ACTION,
  'Book a Google Meet video meeting between the customer and the business.',
  bookingToolParameters,
);
const RESCHEDULE_TOOL = tool(
  RESCHEDULE_ACTION,
  'Move a meeting booked in this conversation to a new time (attendees are notified).',
  rescheduleParameters,
);
const CANCEL_TOOL = tool(
  CANCEL_ACTION,
  'Cancel a meeting booked in this conversation (attendees are notified).',
  cancelParameters,
);
const CHECK_AVAILABILITY_TOOL = tool(
  CHECK_AVAILABILITY,
  'Free meeting times between two dates in the business time zone (real calendar data).',
  checkAvailabilityParameters,
);

const isMeetingAction = (name: string) => (MEETING_ACTIONS as readonly string[]).includes(name);

/** The actions a model output asks for (its tool calls', then its text's) and its prose. */
function actionsOf(output: StoredModelOutput): { actions: unknown[]; prose: string } {
  const { actions: textActions, prose } = extractBookingActions(output.text ?? '');
  const toolActions: unknown[] = output.toolCalls
    .filter((c) => isMeetingAction(c.name))
    .map((c) => {
      try {
        return { ...JSON.parse(c.arguments), action: c.name };
      } catch {
        return { action: c.name, invalid_arguments: true };
      }
    });
  return { actions: [...toolActions, ...textActions].map((a) => withoutControls(a)), prose };
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/**
 * Answers one customer message, claimed by the queue with what answering it needs. At-least-once
 * safe: the model's output is stored before anything acts on it outside the database (by the owner's
 * booking lease's statement, taken before any change; see RespondOptions.unsavedOutput), so a
 * retry books from the same output, and only the message's current claim may store it (a run whose
 * claim was taken over stops, StaleAttempt); the reply insert is unique per customer message and
 * fenced by the claim too (a stale run's answer or fallback is not stored, whichever finishes first),
 * and its statement closes the message (the job's completion), so a second run of an answered message
 * cannot happen through the queue and one racing a slow commit stores nothing.
 */
/**
 * The answer to a claimed message whose row could not be read, on its last attempt (the queue's
 * UnreadableHandler): the model fallback, as when the model cannot be asked. It closes the message
 * like any reply (unique per customer message), and only while its claim is current: a run that
 * stalled past its claim must not close the message under the run that took it over (after a
 * repair, that one may be booking).
 */
export function createUnreadableAnswer(
  deps: Pick<MessageProcessorDeps, 'db' | 'messages' | 'llmErrorMessage' | 'onOutcome'>,
): UnreadableHandler {
  return async ({ messageId, conversationId, claim }, err) => {
    const stored = await deps.messages.storeReply(deps.db, {
      conversationId,
      replyTo: messageId,
      content: deps.llmErrorMessage,
      outcome: 'failed',
      error: describe(err),
      claim,
    });
    deps.onOutcome?.('failed');
    return { nextWaiting: stored.nextWaiting };
  };
}

export function createMessageProcessor(deps: MessageProcessorDeps) {
  return async function processMessage(work: MessageWork, ctx: JobContext): Promise<JobOutcome | undefined> {
    const log = deps.logger.child({
      message_id: work.message.messageId,
      conversation_id: work.message.conversationId,
      job_id: ctx.jobId,
    });
    const agentLog = log.child({ agent_id: work.agent.agentId });
    // The claim this run holds (JobContext.attempt is the claim's `attempts` - 1): it fences the model
    // output's store and every reply, so a run whose claim was taken over writes nothing.
    const claim = ctx.attempt + 1;
    const fallback = async (phase: 'model' | 'booking', err: unknown) => {
      const stored = await deps.messages.storeReply(deps.db, {
        conversationId: work.message.conversationId,
        replyTo: work.message.messageId,
        content: phase === 'model' ? deps.llmErrorMessage : deps.meetingErrorMessage,
        outcome: 'failed',
        error: describe(err),
        claim,
      });
      deps.onOutcome?.('failed');
      return { nextWaiting: stored.nextWaiting };
    };
    /** Stores a composed reply with what it commits (the meeting row), fenced by the claim. */
    const deliver = async (reply: Reply): Promise<JobOutcome> => {
      const input = {
        conversationId: work.message.conversationId,
        replyTo: work.message.messageId,
        content: reply.text,
        outcome: 'answered' as const,
        claim,
      };
      let stored: StoredReply;
      let committed = false;
      try {
        const persist = reply.persist;
        if (persist) {
          stored = await deps.db.transaction().execute(async (trx) => {
            const s = await deps.messages.storeReply(trx, input);
            // Only the attempt whose reply was stored commits the side rows (meeting).
            if (s.message) await persist(trx);
            return s;
          });
        } else if (reply.write) {
          // One statement: its rows are conditioned on the reply being this attempt's.
          stored = await reply.write((rows) => deps.messages.storeReply(deps.db, input, rows));
        } else {
          stored = await deps.messages.storeReply(deps.db, input);
        }
        committed = true;
      } finally {
        // The owner's booking lock is held until the meeting row is visible to the next booking.
        await reply.done?.(committed);
      }
      // Nothing stored: another claim answers (or answered) this message; this run was stale, and is
      // counted as such, as one its heartbeat or its lease statement stopped is.
      agentLog.info({ attempt: ctx.attempt, stored: Boolean(stored.message) }, 'message answered');
      deps.onOutcome?.(stored.message ? 'answered' : 'skipped');
      return { nextWaiting: stored.nextWaiting };
    };
    /**
     * The answer to a message whose actions may have been made at Google without being recorded, when
     * no attempt will act on them again: what Google shows made (a booking's event, a meeting's event
     * at its new time or gone) is recorded and confirmed, with no new change at Google; the actions
     * not found made are answered with MEETING_ERROR_MESSAGE (ActionResponder.recover). Undefined when
     * none was found or what was found could not be recorded: the caller answers with its fallback
     * (what Google shows then stays unrecorded, and is logged here).
     */
    const answerFromGoogle = async (
      output: StoredModelOutput,
      why: string,
    ): Promise<JobOutcome | undefined> => {
      if (!deps.actions.recover) return undefined;
      let recovered: Reply | undefined;
      try {
        const { actions, prose } = actionsOf(output);
        if (actions.length > 0)
          recovered = await deps.actions.recover(work, actions, prose, agentLog, ctx.signal);
      } catch (lookupErr) {
        // Stopping: the claim goes back unanswered, as for any run (the next run answers).
        if (ctx.signal.aborted) throw lookupErr;
        agentLog.error({ err: lookupErr }, 'could not look for what this message’s attempts did');
      }
      if (!recovered) return undefined;
      agentLog.error({ attempt: ctx.attempt }, `message answered from what Google shows made: ${why}`);
      try {
        return await deliver(recovered);
      } catch (writeErr) {
        agentLog.error({ err: writeErr }, 'could not record what this message’s attempts did');
        return undefined;
      }
    };
    /**
     * Its last attempt kept not finishing (a crash, a stop, a fallback that could not be written):
     * answer now rather than run again what failed, so the conversation moves on. An attempt may have
     * made a change before it stopped (a booking's event, a move, a cancel; its reply never
     * committed): that is recorded and confirmed rather than denied (answerFromGoogle).
     */
    const giveUp = async (): Promise<JobOutcome> => {
      const err = new Error(`gave up after ${ctx.attempt} attempts that did not finish`);
      const output = work.message.modelOutput;
      const answered = output && (await answerFromGoogle(output, 'its attempts kept not finishing'));
      if (answered) return answered;
      agentLog.error(
        { attempt: ctx.attempt },
        'message answered with the fallback: its attempts kept not finishing',
      );
      return fallback(output ? 'booking' : 'model', err);
    };
    if (ctx.giveUp) return giveUp();
    let phase: 'model' | 'booking' = 'model';
    let output: StoredModelOutput | undefined;
    let composed = false;
    try {
      const earlier = work.message.modelOutput;
      output = earlier ?? (await askModel(work, ctx.signal, agentLog));
      // Stored by whatever first acts on it (see RespondOptions.unsavedOutput); a plain text answer
      // acts on nothing and is not stored apart from the reply.
      const unsavedOutput: UnsavedOutput | undefined = earlier
        ? undefined
        : { cte: modelOutputCte(work.message.messageId, claim, output) };
      const reply = await composeReply(
        work,
        output,
        agentLog,
        {
          lastAttempt: ctx.isLastAttempt,
          unsavedOutput,
          earlierAttempt: earlier !== null,
          signal: ctx.signal,
        },
        () => {
          phase = 'booking';
        },
      );
      composed = true;
      return await deliver(reply);
    } catch (err) {
      // Aborted by the queue (the process is stopping, or the run took too long): the claim goes back
      // and the message runs again, as a last attempt would after a crash; no fallback from here. Its
      // heartbeat found the claim taken over: a stale attempt stopped, counted as one whichever way
      // it was noticed (here, or by its lease or reply statement below).
      if (ctx.signal.aborted) {
        if (ctx.signal.reason instanceof StaleAttempt) deps.onOutcome?.('skipped');
        throw err;
      }
      if (err instanceof StaleAttempt) {
        agentLog.warn({ attempt: ctx.attempt }, 'stale attempt stopped: another claim answers this message');
        deps.onOutcome?.('skipped');
        throw err;
      }
      if (err instanceof OutcomeUnknown) {
        // Even on the last attempt: a fallback would tell the customer nothing was booked while
        // Google may hold the event. The next run finds out (its insert answers 409, or its lookup).
        agentLog.warn(
          { err, attempt: ctx.attempt },
          'what an action made at Google is unknown; will run again',
        );
        deps.onOutcome?.('retry');
        throw err;
      }
      const retryable = !(err instanceof Upstream) || err.retryable;
      if (retryable && !ctx.isLastAttempt) {
        // The queue gives the claim back with a backoff and keeps the error on the message.
        agentLog.warn({ err, attempt: ctx.attempt, phase }, 'message processing failed; will retry');
        deps.onOutcome?.('retry');
        throw err;
      }
      agentLog.error(
        { err, attempt: ctx.attempt, phase },
        'message processing failed; sending the fallback reply',
      );
      // Its reply, with what its actions made, could not be written, and no attempt acts on them
      // again: the fallback alone would leave events (with their invitations sent) that no meeting
      // row records, and tell the customer nothing happened. What Google shows made is recorded and
      // confirmed instead, as when a message is given up on. (An action that fails on the last
      // attempt ends the answer without dropping the earlier ones: BookingService.respond.)
      if (composed && output) {
        const answered = await answerFromGoogle(output, 'its last attempt failed');
        if (answered) return answered;
      }
      return fallback(phase, err);
    }
  };

  async function askModel(work: MessageWork, signal: AbortSignal, log: Logger): Promise<StoredModelOutput> {
    const context = deps.actions.promptContext?.(work) ?? '';
    const canCheck = Boolean(deps.actions.checkAvailability);
    const messages: ChatTurn[] = [
      {
        role: 'system',
        // "Now" is when the customer spoke, not when a worker got to it: "tomorrow" must not shift.
        content: [
          buildSystemPrompt(
            work.agent.systemPrompt,
            work.agent.timezone,
            work.message.createdAt,
            work.agent.booking?.horizonDays ?? deps.horizonDays,
          ),
          meetingToolInstructions(),
          context,
        ]
          .filter(Boolean)
          .join('\n\n'),
      },
      ...work.history.map(
        (m): ChatTurn =>
          m.role === 'customer'
            ? { role: 'user', content: m.content }
            : { role: 'assistant', content: m.content },
      ),
    ];
    const actionTools = [BOOKING_TOOL, RESCHEDULE_TOOL, CANCEL_TOOL];
    const maxRounds = deps.maxToolRounds ?? 3;
    let result: ChatResult;
    for (let round = 0; ; round++) {
      // The last call offers no check_availability: the model must answer (bounded cost per message).
      const tools = canCheck && round < maxRounds ? [...actionTools, CHECK_AVAILABILITY_TOOL] : actionTools;
      result = await deps.model.complete(
        { model: work.agent.model ?? deps.defaultModel, messages, tools },
        signal,
      );
      const checks = result.toolCalls.filter((c) => c.name === CHECK_AVAILABILITY);
      // An answer that acts (book, reschedule, cancel) or says something is final; only a pure
      // availability question goes back to the model with its results.
      const final =
        checks.length === 0 || result.toolCalls.some((c) => isMeetingAction(c.name)) || round >= maxRounds;
      if (final || !deps.actions.checkAvailability) break;
      messages.push({ role: 'assistant', content: result.text, toolCalls: result.toolCalls });
      for (const call of result.toolCalls) {
        let content: string;
        if (call.name !== CHECK_AVAILABILITY) {
          content = JSON.stringify({ error: `unknown tool ${call.name}` });
        } else {
          let args: unknown;
          try {
            args = JSON.parse(call.arguments);
          } catch {
            args = undefined;
          }
          content = await deps.actions.checkAvailability(work, args, log);
        }
        messages.push({ role: 'tool', toolCallId: call.id, content });
      }
    }
    // U+0000 as a character (not JSON-escaped) in what the model wrote cannot be stored (the output
    // is jsonb, the reply text): removed here, before anything stores or acts on the output. Half a
    // surrogate pair cannot be either (jsonb refuses its escape): replaced with U+FFFD.
    const storable = (text: string) => wellFormed(text.replaceAll('\u0000', ''));
    return {
      text: result.text === null ? null : storable(result.text),
      toolCalls: result.toolCalls.map((c) => ({ ...c, arguments: storable(c.arguments) })),
    };
  }

  async function composeReply(
    work: MessageWork,
    output: StoredModelOutput,
    log: Logger,
    options: RespondOptions,
    enteringBooking: () => void,
  ): Promise<Reply> {
    const { actions, prose } = actionsOf(output);
    // An action the model meant to write but wrote as JSON that does not parse: asked again (a retry
    // asks the model anew: nothing acted on this output, so it was not stored), never shown to the
    // customer as text. An output an earlier attempt stored has acted already and is answered as is.
    if (!options.earlierAttempt && holdsUnreadableAction(prose)) {
      throw new Upstream('the model wrote a meeting action that is not valid JSON', true);
    }
    // Likewise a meeting tool call whose arguments are not JSON: acted on, it would name no meeting
    // and no time (BookingService#target refuses it on an earlier attempt's output).
    if (
      !options.earlierAttempt &&
      actions.some((a) => (a as { invalid_arguments?: unknown }).invalid_arguments)
    ) {
      throw new Upstream('the model called a meeting tool with arguments that are not valid JSON', true);
    }
    // A confirmation the model wrote itself (it has seen ours in the history as its own earlier
    // replies): without an action nothing was booked, moved or cancelled; with one, it would stand
    // above ours, or above a refusal. Either way any link in it is made up. Asked again, never shown.
    if (!options.earlierAttempt && OWN_CONFIRMATION.test(prose)) {
      throw new Upstream('the model wrote a meeting confirmation of its own', true);
    }
    if (actions.length > 0) {
      enteringBooking();
      return deps.actions.respond(work, actions, prose, log, options);
    }
    if (prose) return { text: prose };
    // Empty answer: treat as a model failure so the customer is never left without a reply.
    throw new Upstream('the model returned an empty answer', true);
  }
}

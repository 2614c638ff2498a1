import { MEETING_ACTIONS } from './prompt.js';

/**
 * Finding the seed's booking action in what the model wrote.
 *
 * The model may answer with a tool call, or with JSON somewhere in its text: an array or a single
 * object, bare or in a ``` fence, with prose before and after. A regex cannot match nested JSON
 * (the seed's bug), so this scans for balanced brackets while skipping string contents, then lets
 * JSON.parse decide. Every action found is cut out of the text; the prose around it is kept.
 */

export interface ExtractedActions {
  /** Raw action objects (not yet validated), in order of appearance. */
  actions: Record<string, unknown>[];
  /** The text with every action removed: what the customer may see. */
  prose: string;
}

/**
 * Deeper than any booking action nests. Every bracket is a start to try, so without this bound a
 * run of brackets (which a customer can get the model to write) costs quadratic time: 50,000 `[`
 * took minutes; with it, milliseconds.
 */
const MAX_DEPTH = 32;

/**
 * Characters all the scans of one text may step over together. Each scan stops at its value's
 * end, so real answers (a few kB, a few brackets) use a tiny part of it; but quotes can keep every
 * bracket inside a string (`{"\"` repeated: 30,000 characters took a second), and then each start
 * scans to the end: quadratic again. Past the budget the rest of the text is prose, so no model
 * output costs more than a few milliseconds of CPU.
 */
const SCAN_BUDGET = 4_000_000;

/**
 * End index (exclusive) of the balanced JSON-ish value starting at `start`, or -1. Charges the
 * characters it stepped over to `budget` and stops when it runs out.
 */
function scanBalanced(text: string, start: number, budget: { left: number }): number {
  const stop = Math.min(text.length, start + budget.left);
  let i = start;
  const end = (result: number) => {
    budget.left -= Math.min(i, stop - 1) - start + 1;
    return result;
  };
  const stack: string[] = [];
  let inString = false;
  for (; i < stop; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === '{' || ch === '[') {
      if (stack.length === MAX_DEPTH) return end(-1);
      stack.push(ch === '{' ? '}' : ']');
    } else if (ch === '}' || ch === ']') {
      if (stack.pop() !== ch) return end(-1);
      if (stack.length === 0) return end(i + 1);
    }
  }
  return end(-1);
}

function isBookingAction(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    (MEETING_ACTIONS as readonly unknown[]).includes((value as { action?: unknown }).action)
  );
}

/** The actions a parsed JSON value holds: the object itself, or the action objects of an array. */
function actionsIn(value: unknown): Record<string, unknown>[] | undefined {
  if (isBookingAction(value)) return [value];
  if (Array.isArray(value) && value.length > 0 && value.every(isBookingAction)) return value;
  return undefined;
}

export function extractBookingActions(text: string): ExtractedActions {
  const actions: Record<string, unknown>[] = [];
  const cuts: Array<[number, number]> = [];
  const budget = { left: SCAN_BUDGET };
  let i = 0;
  while (i < text.length && budget.left > 0) {
    const ch = text[i];
    if (ch !== '{' && ch !== '[') {
      i++;
      continue;
    }
    const end = scanBalanced(text, i, budget);
    if (end === -1) {
      i++;
      continue;
    }
    let found: Record<string, unknown>[] | undefined;
    try {
      found = actionsIn(JSON.parse(text.slice(i, end)));
    } catch {
      found = undefined;
    }
    if (found) {
      actions.push(...found);
      cuts.push(widenToFence(text, i, end));
      i = end;
    } else {
      i++;
    }
  }
  if (cuts.length === 0) return { actions, prose: text.trim() };
  let prose = '';
  let from = 0;
  for (const [s, e] of cuts) {
    prose += `${text.slice(from, s)}\n`;
    from = e;
  }
  prose += text.slice(from);
  return { actions, prose: tidy(prose) };
}

/**
 * Quoting around a name: straight or curly quotes, backticks, and the backslashes of JSON written as
 * an escaped string (`"[{\\"action\\": ...`).
 */
const QUOTES = '[\\\\"\'`\u2018\u2019\u201C\u201D]*';

/** `"action": "<one of ours>"` in any quoting or case: what an action the model meant to write holds. */
const ACTION_LIKE = new RegExp(
  `${QUOTES}action${QUOTES}\\s*:\\s*${QUOTES}(?:${MEETING_ACTIONS.join('|')})\\b`,
  'i',
);

/**
 * Whether prose left after extractBookingActions still holds an action the model meant to write but
 * that is not valid JSON (a trailing comma, single quotes, a cut-off array, the action's name in
 * another case). Such an answer must not reach the customer: it would show them raw JSON (their
 * email in it) and book nothing.
 */
export function holdsUnreadableAction(prose: string): boolean {
  return ACTION_LIKE.test(prose);
}

/** When the JSON is the whole content of a ``` fence, the fence goes too. */
function widenToFence(text: string, start: number, end: number): [number, number] {
  const before = /```[a-zA-Z]*[ \t]*\r?\n?[ \t]*$/.exec(text.slice(Math.max(0, start - 20), start));
  const after = /^[ \t]*\r?\n?[ \t]*```/.exec(text.slice(end, end + 20));
  if (before && after) return [start - before[0].length, end + after[0].length];
  return [start, end];
}

function tidy(prose: string): string {
  return prose
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

/**
 * Half of a UTF-16 surrogate pair without its other half (`"\ud83d"` in the model's JSON): not
 * Unicode text, so PostgreSQL refuses it in jsonb (a webhook's payload) and the booking could not be
 * recorded either. Replaced with U+FFFD.
 */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** `text` with every lone surrogate replaced (LONE_SURROGATE): storable in jsonb. */
export function wellFormed(text: string): string {
  return text.replace(LONE_SURROGATE, '\uFFFD');
}

/** C0 control characters but tab, line feed and carriage return, and DEL. */
const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/g;

/**
 * `value` (an action as parsed) with the control characters but tab and line breaks removed from
 * every string in it, and lone surrogates replaced (LONE_SURROGATE). The model can write them escaped in its JSON (`"friendly_time": "3 PM\u0000"`),
 * and PostgreSQL cannot store U+0000: such a booking would be made at Google (invitations sent) and
 * then fail to be recorded on every attempt. None of them belongs in a name, title, email or time.
 */
export function withoutControls(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return wellFormed(value.replace(CONTROL, ''));
  if (value === null || typeof value !== 'object' || depth >= MAX_DEPTH) return value;
  if (Array.isArray(value)) return value.map((v) => withoutControls(v, depth + 1));
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [k.replace(CONTROL, ''), withoutControls(v, depth + 1)]),
  );
}

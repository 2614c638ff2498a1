import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  extractBookingActions,
  holdsUnreadableAction,
  withoutControls,
} from '../../src/domain/booking-action.js';

/** The seed's example action, exactly as the spec shows it. */
const SEED_ACTION = {
  action: 'Time_to_121meet',
  name: 'Siddhant',
  email: 'siddhant@gmail.com',
  title: 'Demo',
  participants: ['siddhant@gmail.com'],
  meeting_time: '2025-10-06T19:00:00+05:30',
  friendly_time: 'today at 7 PM IST',
};

/** The seed's array form, with its original layout. */
const SEED_ARRAY_TEXT = `[{
  "action": "Time_to_121meet",
  "name": "Siddhant",
  "email": "siddhant@gmail.com",
  "title": "Demo",
  "participants": ["siddhant@gmail.com"],
  "meeting_time": "2025-10-06T19:00:00+05:30",
  "friendly_time": "today at 7 PM IST"
}]`;

const SEED_OBJECT_TEXT = JSON.stringify(SEED_ACTION, null, 2);

const OTHER_ACTION = {
  action: 'Time_to_121meet',
  name: 'Ana',
  email: 'ana@example.com',
  title: 'Follow-up',
  participants: ['ana@example.com', 'bo@example.com'],
  meeting_time: '2025-10-07T09:30:00-04:00',
  friendly_time: 'tomorrow at 9:30 AM EDT',
};

/** Reference tidy: what the customer should see of the text around a cut-out action. */
function tidied(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

interface Case {
  name: string;
  text: string;
  actions: Record<string, unknown>[];
  prose: string;
}

const cases: Case[] = [
  { name: 'the seed array, bare', text: SEED_ARRAY_TEXT, actions: [SEED_ACTION], prose: '' },
  { name: 'a single object, bare', text: SEED_OBJECT_TEXT, actions: [SEED_ACTION], prose: '' },
  {
    name: 'compact single object on one line',
    text: JSON.stringify(SEED_ACTION),
    actions: [SEED_ACTION],
    prose: '',
  },
  {
    name: 'the seed array in a ```json fence',
    text: `\`\`\`json\n${SEED_ARRAY_TEXT}\n\`\`\``,
    actions: [SEED_ACTION],
    prose: '',
  },
  {
    name: 'an object in a bare ``` fence',
    text: `\`\`\`\n${SEED_OBJECT_TEXT}\n\`\`\``,
    actions: [SEED_ACTION],
    prose: '',
  },
  {
    name: 'a fence with CRLF line ends',
    text: `Booking it.\r\n\`\`\`json\r\n${JSON.stringify([SEED_ACTION])}\r\n\`\`\`\r\nBye`,
    actions: [SEED_ACTION],
    prose: 'Booking it.\n\nBye',
  },
  {
    name: 'prose before and after a bare array',
    text: `Great, I'll book that for you!\n\n${SEED_ARRAY_TEXT}\n\nSee you then.`,
    actions: [SEED_ACTION],
    prose: "Great, I'll book that for you!\n\nSee you then.",
  },
  {
    name: 'prose before and after a fenced array: the fence goes too',
    text: `Sure thing!\n\`\`\`json\n${SEED_ARRAY_TEXT}\n\`\`\`\nAnything else?`,
    actions: [SEED_ACTION],
    prose: 'Sure thing!\n\nAnything else?',
  },
  {
    name: 'prose on the same line as the JSON',
    text: `Booking now: ${JSON.stringify(SEED_ACTION)} Talk soon.`,
    actions: [SEED_ACTION],
    prose: 'Booking now:\n Talk soon.',
  },
  {
    name: 'a fence that holds more than the JSON stays',
    text: `\`\`\`json\n// booking\n${JSON.stringify(SEED_ACTION)}\n\`\`\``,
    actions: [SEED_ACTION],
    prose: '```json\n// booking\n\n```',
  },
  {
    name: 'nested objects and arrays in fields',
    text: `Ok ${JSON.stringify({ ...SEED_ACTION, meta: { tags: ['a', { b: [1, 2, { c: null }] }], x: {} } })} done`,
    actions: [{ ...SEED_ACTION, meta: { tags: ['a', { b: [1, 2, { c: null }] }], x: {} } }],
    prose: 'Ok\n done',
  },
  {
    name: 'strings with brackets, braces, escaped quotes and the action name',
    text: `Here: ${JSON.stringify({
      ...SEED_ACTION,
      title: 'Demo [v2] {beta} "quoted" \\ back\\"slash',
      friendly_time: 'see ]} [{ "Time_to_121meet" ',
    })} end`,
    actions: [
      {
        ...SEED_ACTION,
        title: 'Demo [v2] {beta} "quoted" \\ back\\"slash',
        friendly_time: 'see ]} [{ "Time_to_121meet" ',
      },
    ],
    prose: 'Here:\n end',
  },
  {
    name: 'unicode and newlines escaped in strings',
    text: JSON.stringify([{ ...SEED_ACTION, name: 'Zoë 😀\nLine', title: '\u2028x' }]),
    actions: [{ ...SEED_ACTION, name: 'Zoë 😀\nLine', title: '\u2028x' }],
    prose: '',
  },
  {
    name: 'two actions in one array',
    text: JSON.stringify([SEED_ACTION, OTHER_ACTION]),
    actions: [SEED_ACTION, OTHER_ACTION],
    prose: '',
  },
  {
    name: 'two separate actions with prose between, in order',
    text: `First ${JSON.stringify(SEED_ACTION)} and then\n\`\`\`json\n${JSON.stringify([OTHER_ACTION])}\n\`\`\`\nThanks`,
    actions: [SEED_ACTION, OTHER_ACTION],
    prose: 'First\n and then\n\nThanks',
  },
  {
    name: 'JSON that is not an action stays in place',
    text: 'The config is {"a":1} and [1, 2, 3].',
    actions: [],
    prose: 'The config is {"a":1} and [1, 2, 3].',
  },
  {
    name: 'an object whose action is another name stays',
    text: '{"action": "cancel", "email": "a@b.co"}',
    actions: [],
    prose: '{"action": "cancel", "email": "a@b.co"}',
  },
  {
    name: 'action name in another case is not the action',
    text: '{"action": "time_to_121meet"}',
    actions: [],
    prose: '{"action": "time_to_121meet"}',
  },
  {
    name: 'an array mixing an action with other values is not the array form',
    text: `[${JSON.stringify(SEED_ACTION)}, {"a":1}]`,
    actions: [SEED_ACTION],
    prose: '[\n, {"a":1}]',
  },
  {
    name: 'an empty array is not an action',
    text: 'Nothing to book: []',
    actions: [],
    prose: 'Nothing to book: []',
  },
  {
    name: 'malformed JSON (trailing comma) stays in place',
    text: '[{"action": "Time_to_121meet", "email": "a@b.co",}]',
    actions: [],
    prose: '[{"action": "Time_to_121meet", "email": "a@b.co",}]',
  },
  {
    name: 'malformed JSON (single quotes) stays in place',
    text: "  {'action': 'Time_to_121meet'}  ",
    actions: [],
    prose: "{'action': 'Time_to_121meet'}",
  },
  {
    name: 'unterminated action JSON stays in place',
    text: 'Booking: [{"action": "Time_to_121meet", "email": "a@b.co"',
    actions: [],
    prose: 'Booking: [{"action": "Time_to_121meet", "email": "a@b.co"',
  },
  {
    name: 'unbalanced brackets in prose before and after',
    text: `Options: [a, (b {c ]] ${JSON.stringify(SEED_ACTION)} }} [ ok`,
    actions: [SEED_ACTION],
    prose: 'Options: [a, (b {c ]]\n }} [ ok',
  },
  {
    name: 'an unclosed quote in prose before the JSON',
    text: `He said "hi [there ${JSON.stringify(SEED_ACTION)} bye`,
    actions: [SEED_ACTION],
    prose: 'He said "hi [there\n bye',
  },
  {
    name: 'prose that only mentions the action',
    text: 'I will use the "Time_to_121meet" action [soon] {maybe}.',
    actions: [],
    prose: 'I will use the "Time_to_121meet" action [soon] {maybe}.',
  },
  {
    name: 'plain text is trimmed',
    text: '  Hello there!  \n',
    actions: [],
    prose: 'Hello there!',
  },
  { name: 'empty text', text: '', actions: [], prose: '' },
];

describe('extractBookingActions', () => {
  it.each(cases)('$name', ({ text, actions, prose }) => {
    const result = extractBookingActions(text);
    expect(result.actions).toEqual(actions);
    expect(result.prose).toBe(prose);
  });

  it('finds an action inside many levels of prose brackets, and nested fields 20 deep', () => {
    let deep: unknown = 'bottom';
    for (let i = 0; i < 20; i++) deep = i % 2 ? [deep] : { d: deep };
    const action = { ...SEED_ACTION, meta: deep };
    const text = `${'[('.repeat(200)} ${JSON.stringify(action)} ${')]'.repeat(200)}`;
    const result = extractBookingActions(text);
    expect(result.actions).toEqual([action]);
    expect(result.prose).toBe(`${'[('.repeat(200)}\n ${')]'.repeat(200)}`);
  });

  it('finds the action behind long runs of unbalanced brackets', () => {
    // Before the scan depth was bounded, 50,000 `[` took minutes (speed is measured by `npm run bench`,
    // never asserted here); this input finishing at all is what the test guards.
    const result = extractBookingActions(
      `${'['.repeat(60_000)}${JSON.stringify([SEED_ACTION])}${'{'.repeat(60_000)}`,
    );
    expect(result.actions).toEqual([SEED_ACTION]);
  });

  it('bounds the work on brackets that quotes keep inside strings, keeping what it found', () => {
    // `{"\"` repeated keeps every `{` inside a string, so each one scanned to the end (30,000
    // characters took a second); a budget now ends the search, the rest being prose. This input
    // finishing at all is what the test guards (speed is measured by `npm run bench`).
    const soup = '{"\\"'.repeat(200_000);
    const result = extractBookingActions(`${JSON.stringify(SEED_ACTION)} ${soup}`);
    expect(result.actions).toEqual([SEED_ACTION]);
    expect(result.prose).toBe(soup);
  });

  it('keeps the action objects exactly as the model wrote them (extra fields too)', () => {
    const { actions } = extractBookingActions(JSON.stringify({ ...SEED_ACTION, extra: [1, '2'] }));
    expect(actions).toEqual([{ ...SEED_ACTION, extra: [1, '2'] }]);
  });
});

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

const emailArb = fc
  .tuple(
    fc.stringMatching(/^[a-z][a-z0-9._]{0,10}$/),
    fc.stringMatching(/^[a-z]{1,10}$/),
    fc.constantFrom('com', 'io', 'co.uk'),
  )
  .map(([u, d, t]) => `${u}@${d}.${t}`);

/** Strings a model may put in fields: full unicode, brackets, quotes, backslashes, the action name. */
const nastyString = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 30 }),
  fc
    .array(
      fc.constantFrom(
        '[',
        ']',
        '{',
        '}',
        '"',
        '\\',
        '\\"',
        'Time_to_121meet',
        '```',
        '\n',
        ' ',
        'x',
        ':',
        ',',
      ),
      { maxLength: 12 },
    )
    .map((a) => a.join('')),
);

const jsonValue = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    nastyString,
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 6 }), tie('value'), { maxKeys: 3 }),
  ),
})).value;

const actionArb: fc.Arbitrary<Record<string, unknown>> = fc
  .record(
    {
      name: nastyString,
      email: emailArb,
      title: nastyString,
      participants: fc.array(emailArb, { maxLength: 3 }),
      meeting_time: fc.constantFrom('2025-10-06T19:00:00+05:30', '2026-01-01T09:00:00Z'),
      friendly_time: fc.option(nastyString),
      meta: jsonValue,
    },
    { requiredKeys: ['email', 'meeting_time'] },
  )
  .map((r) => ({ action: 'Time_to_121meet', ...r }));

/** Prose: text that may hold brackets, quotes, fences, JSON that is not an action, and the word. */
const proseArb = fc
  .array(
    fc.oneof(
      fc.string({ unit: 'grapheme', maxLength: 8 }),
      fc.constantFrom(
        '[',
        ']',
        '{',
        '}',
        '"',
        '\\',
        ':',
        ',',
        ' ',
        '\n',
        '\t',
        '```',
        'action',
        'Time_to_121meet',
        '"Time_to_121meet"',
        '{"a":1}',
        '[1,2]',
        '["Time_to_121meet"]',
        '{"action": "other"}',
        'Sure, booking it!',
      ),
    ),
    { maxLength: 12 },
  )
  .map((parts) => parts.join(''));

type Layout = 'bare' | 'fenced-json' | 'fenced-plain';

function render(action: Record<string, unknown>, asArray: boolean, pretty: boolean): string {
  return JSON.stringify(asArray ? [action] : action, null, pretty ? 2 : undefined);
}

describe('extractBookingActions properties', () => {
  it('finds exactly the one action between arbitrary prose, and keeps the prose', () => {
    fc.assert(
      fc.property(
        proseArb,
        actionArb,
        fc.boolean(),
        fc.boolean(),
        fc.constantFrom<Layout>('bare', 'fenced-json', 'fenced-plain'),
        fc.constantFrom(' ', '\n', '\n\n', ''),
        proseArb,
        (before, action, asArray, pretty, layout, sep, after) => {
          // The prose on its own holds no action (so anything found is the one we put in).
          fc.pre(extractBookingActions(before).actions.length === 0);
          fc.pre(extractBookingActions(after).actions.length === 0);
          const json = render(action, asArray, pretty);
          let middle: string;
          if (layout === 'bare') {
            // Brackets around a bare object turn it into the array form (and belong to it).
            fc.pre(asArray || !(/\[\s*$/.test(before + sep) && /^\s*]/.test(sep + after)));
            // Backticks right around a bare JSON make a fence (removed with it).
            fc.pre(!(/```[a-zA-Z]*\s*$/.test(before + sep) && /^\s*```/.test(sep + after)));
            middle = json;
          } else {
            middle = `\`\`\`${layout === 'fenced-json' ? 'json' : ''}\n${json}\n\`\`\``;
          }
          const text = `${before}${sep}${middle}${sep}${after}`;
          const result = extractBookingActions(text);
          expect(result.actions).toEqual([action]);
          expect(result.prose).toBe(tidied(`${before}${sep}\n${sep}${after}`));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('finds every action of several, in order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(proseArb, actionArb, fc.boolean()), { minLength: 1, maxLength: 4 }),
        (parts) => {
          for (const [prose] of parts) fc.pre(extractBookingActions(prose).actions.length === 0);
          const text = parts
            .map(([prose, action, asArray]) => `${prose}\n${render(action, asArray, false)}\n`)
            .join('');
          expect(extractBookingActions(text).actions).toEqual(parts.map(([, a]) => a));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('never finds an action in prose that merely mentions Time_to_121meet', () => {
    const mention = fc.constantFrom(
      'Time_to_121meet',
      '"Time_to_121meet"',
      '["Time_to_121meet"]',
      '{"Time_to_121meet"}',
      '{Time_to_121meet}',
      '[Time_to_121meet]',
      '"action": "Time_to_121meet"',
      "{'action': 'Time_to_121meet'}",
      '{"action": Time_to_121meet}',
      '{"Time_to_121meet": "action"}',
      '[{"name": "Time_to_121meet"}]',
    );
    const noise = fc.constantFrom(
      'the',
      ' ',
      'action',
      '[',
      ']',
      '{',
      '}',
      '"',
      '\\',
      ',',
      ':',
      'soon',
      '\n',
      '```json',
    );
    fc.assert(
      fc.property(
        fc.array(fc.oneof(mention, noise, fc.string({ maxLength: 5 })), { maxLength: 20 }),
        (parts) => {
          const text = parts.join('');
          // Only an object with the key "action" set to the name is an action; guard against the
          // generator assembling one from pieces.
          fc.pre(!/"action"\s*:\s*"Time_to_121meet"/.test(text));
          const result = extractBookingActions(text);
          expect(result.actions).toEqual([]);
          expect(result.prose).toBe(text.trim());
        },
      ),
      { numRuns: 500 },
    );
    expect(extractBookingActions('the "Time_to_121meet" action [soon]').actions).toEqual([]);
  });

  it('never throws, and returns only action objects, on arbitrary strings', () => {
    const bracketHeavy = fc
      .array(
        fc.constantFrom(
          '[',
          ']',
          '{',
          '}',
          '"',
          '\\',
          'a',
          ',',
          ':',
          '1',
          ' ',
          '"action"',
          '"Time_to_121meet"',
        ),
        {
          maxLength: 60,
        },
      )
      .map((a) => a.join(''));
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), bracketHeavy), (text) => {
        const result = extractBookingActions(text);
        expect(typeof result.prose).toBe('string');
        for (const a of result.actions) expect(a.action).toBe('Time_to_121meet');
        // Nothing is invented: without an action name in the text there is no action.
        if (!text.includes('Time_to_121meet')) expect(result.actions).toEqual([]);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('holdsUnreadableAction', () => {
  const unreadable = (text: string) => holdsUnreadableAction(extractBookingActions(text).prose);

  it.each([
    [
      'a trailing comma',
      'Sure! [{"action":"Time_to_121meet","email":"a@b.co","meeting_time":"2031-01-06T10:00:00Z",}]',
    ],
    ['single quotes', "Done: {'action': 'Time_to_121meet', 'email': 'a@b.co'}"],
    ['the name in another case', '[{"action":"time_to_121meet","email":"a@b.co"}]'],
    ['a cut-off array', 'Booking now [{"action": "Time_to_121meet", "email": "a@b.co"'],
    ['a cancel without quotes', 'ok {action: cancel_meeting}'],
    ['a move in a fence', '```json\n{"action":"reschedule_meeting","new_time":"tomorrow",}\n```'],
    ['curly quotes', 'Done: {“action”: “Time_to_121meet”, “email”: “a@b.co”}'],
    [
      'JSON written as an escaped string',
      '"[{\\"action\\":\\"Time_to_121meet\\",\\"email\\":\\"a@b.co\\"}]"',
    ],
  ])('finds an action written as JSON that does not parse: %s', (_what, text) => {
    expect(extractBookingActions(text).actions).toEqual([]);
    expect(unreadable(text)).toBe(true);
  });

  it.each([
    ['plain prose', 'Happy to help! What time suits you?'],
    ['prose about the action', 'I can take an action for you: book, move or cancel a meeting.'],
    ['a link with an action in its query', 'Manage it at https://example.com/m?action=cancel_meeting&id=1'],
    [
      'a valid action, cut out of the prose',
      'Sure!\n```json\n[{"action":"Time_to_121meet","email":"a@b.co","meeting_time":"2031-01-06T10:00:00Z"}]\n```',
    ],
  ])('finds nothing in %s', (_what, text) => {
    expect(unreadable(text)).toBe(false);
  });
});

describe('withoutControls', () => {
  it('removes control characters (tab and line breaks kept) from every string of an action, keys too', () => {
    const [action] = extractBookingActions(
      JSON.stringify([
        {
          ...SEED_ACTION,
          'name\u0000': 'Sid\u0000dhant',
          title: 'Demo\u0007\u001b[31m',
          friendly_time: 'today\tat\n7\u007f PM',
          participants: ['a@b.co\u0000'],
        },
      ]),
    ).actions;
    expect(withoutControls(action)).toEqual({
      ...SEED_ACTION,
      name: 'Siddhant',
      title: 'Demo[31m',
      friendly_time: 'today\tat\n7 PM',
      participants: ['a@b.co'],
    });
  });

  it('replaces a lone surrogate (not Unicode text: PostgreSQL refuses it in jsonb), keeps pairs', () => {
    const [action] = extractBookingActions(
      '[{"action":"Time_to_121meet","title":"Demo \\ud83d \\ude00 \\ud83d\\ude00"}]',
    ).actions;
    expect(withoutControls(action)).toEqual({ action: 'Time_to_121meet', title: 'Demo \ufffd \ufffd 😀' });
  });

  it('leaves other values as they are', () => {
    expect(withoutControls({ a: 1, b: null, c: [true, { d: 'x' }] })).toEqual({
      a: 1,
      b: null,
      c: [true, { d: 'x' }],
    });
    expect(withoutControls(null)).toBe(null);
  });
});

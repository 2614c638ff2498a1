/**
 * The first name an object of `text` holds twice, or undefined. `text` must be JSON that JSON.parse
 * accepted (the grammar is not checked again here). JSON.parse keeps the last of two equal names, so
 * `{"monday": [...], "monday": [...]}` would silently lose the first day's hours; the body parser
 * refuses such a body instead. Names are compared as decoded (`"a"` and `"\u0061"` are the same name).
 * One pass over the text, a set per open object: a few microseconds for our bodies.
 */
export function duplicateKey(text: string): string | undefined {
  // Per open bracket: the names seen so far in an object, null for an array.
  const open: Array<Set<string> | null> = [];
  // The next string is a name: right after `{` or after a `,` inside an object.
  let nameNext = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === QUOTE) {
      const start = i;
      let escaped = false;
      for (i++; i < text.length && text.charCodeAt(i) !== QUOTE; i++) {
        if (text.charCodeAt(i) === BACKSLASH) {
          escaped = true;
          i++;
        }
      }
      const names = open.at(-1);
      if (nameNext && names) {
        const name: string = escaped ? JSON.parse(text.slice(start, i + 1)) : text.slice(start + 1, i);
        if (names.has(name)) return name;
        names.add(name);
        nameNext = false;
      }
    } else if (ch === OPEN_BRACE) {
      open.push(new Set());
      nameNext = true;
    } else if (ch === OPEN_BRACKET) {
      open.push(null);
      nameNext = false;
    } else if (ch === CLOSE_BRACE || ch === CLOSE_BRACKET) {
      open.pop();
      nameNext = false;
    } else if (ch === COMMA) {
      nameNext = Boolean(open.at(-1));
    }
  }
  return undefined;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;

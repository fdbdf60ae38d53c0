/** One challenge of a WWW-Authenticate header: the scheme in lowercase and its parameters with lowercase names. */
export interface Challenge {
  scheme: string;
  parameters: Map<string, string>;
}

const tokenPattern = /[!#$%&'*+.^_`|~0-9A-Za-z-]+/y;
const quotedStringPattern = /"((?:[^"\\]|\\.)*)"/y;
const token68Pattern = /[A-Za-z0-9._~+/-]+=*/y;
const whitespacePattern = /[ \t]*/y;

/**
 * Parses a WWW-Authenticate header into its challenges (RFC 9110 section
 * 11.6.1): several challenges separated by commas, each a case-insensitive
 * scheme with parameters whose values are tokens or quoted strings that may
 * contain commas and backslash escapes. Parsing stops at the first syntax
 * error and returns the challenges read until then.
 */
export function parseWwwAuthenticate(header: string | null): Challenge[] {
  if (!header) return [];
  const parser = new HeaderParser(header);
  const challenges: Challenge[] = [];

  for (;;) {
    parser.skipSeparators();
    const scheme = parser.match(tokenPattern);
    if (scheme === null) return challenges;
    const challenge: Challenge = { scheme: scheme.toLowerCase(), parameters: new Map() };
    challenges.push(challenge);
    parser.skip(whitespacePattern);
    if (!readParameters(parser, challenge)) return challenges;
  }
}

/** Reads `name=value` pairs (or one token68) of a challenge. Returns false on a syntax error. */
function readParameters(parser: HeaderParser, challenge: Challenge): boolean {
  const start = parser.position;
  const token68 = parser.match(token68Pattern);
  if (token68 !== null && parser.atChallengeEnd()) return true;
  parser.position = start;

  for (;;) {
    const beforeName = parser.position;
    parser.skipSeparators();
    const name = parser.match(tokenPattern);
    if (name === null) return parser.atEnd();
    parser.skip(whitespacePattern);
    if (!parser.consume("=")) {
      // A token without "=" starts the next challenge.
      parser.position = beforeName;
      return true;
    }
    parser.skip(whitespacePattern);
    const quoted = parser.match(quotedStringPattern, 1);
    const value = quoted === null ? parser.match(tokenPattern) : quoted.replace(/\\(.)/g, "$1");
    if (value === null) return false;
    challenge.parameters.set(name.toLowerCase(), value);
    parser.skip(whitespacePattern);
    if (!parser.atEnd() && !parser.consume(",")) return false;
  }
}

class HeaderParser {
  position = 0;
  readonly #text: string;

  constructor(text: string) {
    this.#text = text;
  }

  /** Matches the sticky `pattern` at the current position and moves past it; returns the group `group` or null. */
  match(pattern: RegExp, group = 0): string | null {
    pattern.lastIndex = this.position;
    const found = pattern.exec(this.#text);
    if (!found) return null;
    this.position = pattern.lastIndex;
    return found[group] ?? "";
  }

  skip(pattern: RegExp): void {
    this.match(pattern);
  }

  skipSeparators(): void {
    while (this.consume(",") || this.match(/[ \t]+/y) !== null);
  }

  consume(character: string): boolean {
    if (this.#text[this.position] !== character) return false;
    this.position += 1;
    return true;
  }

  atEnd(): boolean {
    return this.position >= this.#text.length;
  }

  /** Returns whether only white space remains before a comma or the end of the header. */
  atChallengeEnd(): boolean {
    const rest = this.#text.slice(this.position).trimStart();
    return rest === "" || rest.startsWith(",");
  }
}

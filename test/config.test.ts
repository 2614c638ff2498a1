import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseEncryptionKeys } from '../src/config.js';

const KEY_A = randomBytes(32).toString('base64');
const KEY_B = randomBytes(32).toString('base64');
const ADMIN = 'an-admin-key-that-is-long-enough';
const PG_URL = 'postgres://app@db.internal:5432/meetings';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'am-config-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A complete, valid server-mode environment (so no files are generated) plus overrides. */
const serverEnv = (over: Record<string, string | undefined> = {}) => ({
  DATABASE_URL: PG_URL,
  ADMIN_API_KEY: ADMIN,
  TOKEN_ENCRYPTION_KEY: KEY_A,
  DATA_DIR: dir,
  ...over,
});

/** The ConfigError `fn` throws; fails the test if it does not throw one. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError, but nothing was thrown');
}

describe('loadConfig defaults', () => {
  it('fills every default when only the required server settings are given', () => {
    const c = loadConfig(serverEnv());
    expect(c.port).toBe(3000);
    expect(c.host).toBe('0.0.0.0');
    expect(c.databaseUrl).toBe(PG_URL);
    expect(c.databaseSchema).toBe('public');
    expect(c.databasePoolSize).toBe(10);
    expect(c.databasePreparedStatements).toBe(true);
    expect(c.dataDir).toBe(dir);
    expect(c.adminApiKey).toBe(ADMIN);
    expect(c.tokenEncryptionKeys).toHaveLength(1);
    expect(c.tokenEncryptionKeys[0]!.equals(Buffer.from(KEY_A, 'base64'))).toBe(true);
    expect(c.google).toEqual({
      clientId: '',
      clientSecret: '',
      apiRootUrl: 'https://www.googleapis.com/',
      oauthTokenUrl: 'https://oauth2.googleapis.com/token',
      timeoutMs: 15_000,
    });
    expect(c.openai).toEqual({
      apiKey: '',
      baseUrl: undefined,
      model: 'gpt-4o-mini',
      timeoutMs: 60_000,
      maxOutputTokens: 4096,
    });
    // The seed's exact fallback text.
    expect(c.meetingErrorMessage).toBe(
      'Ohhh we having trouble scheduling the meeting. Please try again later.',
    );
    expect(c.llmErrorMessage.length).toBeGreaterThan(0);
    expect(c.logLevel).toBe('info');
    expect(c.workerConcurrency).toBe(50);
    expect(c.jobRetryLimit).toBe(4);
    expect(c.historyLimit).toBe(20);
    expect(c.booking).toEqual({
      maxParticipants: 10,
      minNoticeMinutes: 5,
      horizonDays: 90,
      maxBookingsPerConversation: 3,
    });
    expect(c.rateLimit).toEqual({ perIp: 300, perConversation: 30, windowSeconds: 60 });
    expect(c.sse).toEqual({ maxStreams: 2000, perIp: 100, maxStreamSeconds: 1800 });
    // A server deployment without a model key or a Google client fails every booking: said at start.
    expect(c.startupNotes).toEqual([
      expect.stringMatching(/^OPENAI_API_KEY is not set/),
      expect.stringMatching(/^GOOGLE_CLIENT_ID or GOOGLE_CLIENT_SECRET is not set/),
    ]);
    const complete = loadConfig(
      serverEnv({ OPENAI_API_KEY: 'sk-test', GOOGLE_CLIENT_ID: 'id', GOOGLE_CLIENT_SECRET: 'secret' }),
    );
    expect(complete.startupNotes).toEqual([]);
    expect(loadConfig(serverEnv({ OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' })).startupNotes).toHaveLength(1);
  });

  it('parses numbers and strings from the environment', () => {
    const c = loadConfig(
      serverEnv({
        PORT: '8080',
        HOST: '127.0.0.1',
        WORKER_CONCURRENCY: '7',
        LOG_LEVEL: 'debug',
        DATABASE_SCHEMA: 'meetings_1',
        MEETING_ERROR_MESSAGE: 'Custom failure text',
        OPENAI_BASE_URL: 'http://127.0.0.1:9999/v1',
        DATABASE_PREPARED_STATEMENTS: 'off',
        SSE_MAX_STREAMS: '50',
        SSE_STREAMS_PER_IP: '5',
        SSE_MAX_STREAM_SECONDS: '600',
        LLM_MAX_OUTPUT_TOKENS: '0',
      }),
    );
    expect(c.openai.maxOutputTokens).toBe(0);
    expect(c.sse).toEqual({ maxStreams: 50, perIp: 5, maxStreamSeconds: 600 });
    expect(c.databasePreparedStatements).toBe(false);
    expect(c.port).toBe(8080);
    expect(c.host).toBe('127.0.0.1');
    expect(c.workerConcurrency).toBe(7);
    expect(c.logLevel).toBe('debug');
    expect(c.databaseSchema).toBe('meetings_1');
    expect(c.meetingErrorMessage).toBe('Custom failure text');
    expect(c.openai.baseUrl).toBe('http://127.0.0.1:9999/v1');
  });

  it('adds the trailing slash to GOOGLE_API_ROOT_URL (it is a base URL)', () => {
    expect(loadConfig(serverEnv({ GOOGLE_API_ROOT_URL: 'http://127.0.0.1:4010' })).google.apiRootUrl).toBe(
      'http://127.0.0.1:4010/',
    );
    expect(loadConfig(serverEnv({ GOOGLE_API_ROOT_URL: 'http://127.0.0.1:4010/' })).google.apiRootUrl).toBe(
      'http://127.0.0.1:4010/',
    );
  });

  it('ignores variables it does not know', () => {
    const c = loadConfig(serverEnv({ HOME: '/root', SOMETHING_ELSE: 'x' }));
    expect(c).not.toHaveProperty('HOME');
    expect(c.port).toBe(3000);
  });

  it('treats empty and blank strings as unset (a .env copied with blank values)', () => {
    const c = loadConfig(
      serverEnv({
        PORT: '',
        LOG_LEVEL: '  ',
        MEETING_ERROR_MESSAGE: '',
        GOOGLE_API_ROOT_URL: '',
        OPENAI_BASE_URL: '',
        WORKER_CONCURRENCY: ' ',
      }),
    );
    expect(c.port).toBe(3000);
    expect(c.logLevel).toBe('info');
    expect(c.meetingErrorMessage).toBe(
      'Ohhh we having trouble scheduling the meeting. Please try again later.',
    );
    expect(c.google.apiRootUrl).toBe('https://www.googleapis.com/');
    expect(c.openai.baseUrl).toBeUndefined();
    expect(c.workerConcurrency).toBe(50);
  });

  it('returns a frozen config, including its nested parts', () => {
    const c = loadConfig(serverEnv());
    expect(Object.isFrozen(c)).toBe(true);
    expect(() => {
      (c as { port: number }).port = 1;
    }).toThrow(TypeError);
    expect(c.port).toBe(3000);
    for (const part of [c.google, c.openai, c.booking, c.rateLimit, c.tokenEncryptionKeys, c.startupNotes]) {
      expect(Object.isFrozen(part)).toBe(true);
    }
    expect(() => {
      (c.google as { apiRootUrl: string }).apiRootUrl = 'http://evil.example/';
    }).toThrow(TypeError);
    expect(c.google.apiRootUrl).toBe('https://www.googleapis.com/');
  });
});

describe('loadConfig rejects bad values, naming the variable', () => {
  it.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['PORT', '-1'],
    ['PORT', '80.5'],
    ['DATABASE_URL', 'mysql://x'],
    ['LOG_LEVEL', 'loud'],
    ['GOOGLE_API_ROOT_URL', 'ftp://x'],
    ['GOOGLE_API_ROOT_URL', 'not a url'],
    ['GOOGLE_OAUTH_TOKEN_URL', 'file:///etc/passwd'],
    ['OPENAI_BASE_URL', 'ftp://x'],
    ['ADMIN_API_KEY', 'short'],
    ['ADMIN_API_KEY', '123456789012345'],
    ['ADMIN_API_KEY', 'abcdefgh ijklmnopq'],
    ['ADMIN_API_KEY', 'abcdefghijklmnopq\n'],
    ['WORKER_CONCURRENCY', '0'],
    ['DATABASE_PREPARED_STATEMENTS', 'yes'],
    ['DATABASE_SCHEMA', 'Robert"; DROP TABLE x'],
    ['DATABASE_SCHEMA', 'a'.repeat(44)],
    ['DATABASE_SCHEMA', 'pg_meetings'],
    ['BOOKING_HORIZON_DAYS', '366'],
    ['SSE_MAX_STREAMS', '0'],
    ['LLM_MAX_OUTPUT_TOKENS', '-1'],
    ['SSE_STREAMS_PER_IP', '1.5'],
    ['SSE_MAX_STREAM_SECONDS', '86401'],
    ['TRUST_PROXY', 'true'],
    ['TRUST_PROXY', '10.0.0.0/33'],
    ['TRUST_PROXY', '10.0.0.1,proxy.internal'],
    ['TRUST_PROXY', '-1'],
  ])('%s=%s', (name, value) => {
    const err = configError(() => loadConfig(serverEnv({ [name]: value })));
    expect(err.message).toContain(name);
    // Only the bad variable is reported.
    const problemLines = err.message.split('\n').filter((l) => /^\s+[A-Z_]+:/.test(l));
    expect(problemLines.length).toBeGreaterThan(0);
    for (const line of problemLines) expect(line).toMatch(new RegExp(`^\\s+${name}:`));
  });

  it('accepts the edges of the ranges', () => {
    expect(loadConfig(serverEnv({ PORT: '0' })).port).toBe(0);
    expect(loadConfig(serverEnv({ PORT: '65535' })).port).toBe(65535);
    expect(loadConfig(serverEnv({ ADMIN_API_KEY: '1234567890123456' })).adminApiKey).toBe('1234567890123456');
    expect(loadConfig(serverEnv({ DATABASE_URL: 'postgresql://x/y' })).databaseUrl).toBe('postgresql://x/y');
    expect(loadConfig(serverEnv({ DATABASE_SCHEMA: 'a'.repeat(43) })).databaseSchema).toBe('a'.repeat(43));
    expect(loadConfig(serverEnv({ BOOKING_HORIZON_DAYS: '365' })).booking.horizonDays).toBe(365);
  });

  it('refuses a notice as long as the horizon: no time could be booked', () => {
    const err = configError(() =>
      loadConfig(serverEnv({ MIN_NOTICE_MINUTES: '1440', BOOKING_HORIZON_DAYS: '1' })),
    );
    expect(err.message).toContain('MIN_NOTICE_MINUTES must be shorter than BOOKING_HORIZON_DAYS');
    expect(
      loadConfig(serverEnv({ MIN_NOTICE_MINUTES: '1439', BOOKING_HORIZON_DAYS: '1' })).booking
        .minNoticeMinutes,
    ).toBe(1439);
  });

  it('TRUST_PROXY: off by default, a number of hops, or addresses and ranges', () => {
    expect(loadConfig(serverEnv()).trustProxy).toBe(false);
    expect(loadConfig(serverEnv({ TRUST_PROXY: 'off' })).trustProxy).toBe(false);
    expect(loadConfig(serverEnv({ TRUST_PROXY: '2' })).trustProxy).toBe(2);
    expect(loadConfig(serverEnv({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1,fd00::/8' })).trustProxy).toBe(
      '10.0.0.0/8,127.0.0.1,fd00::/8',
    );
  });

  it('reports every bad variable at once', () => {
    const err = configError(() => loadConfig(serverEnv({ PORT: 'abc', LOG_LEVEL: 'loud' })));
    expect(err.message).toContain('PORT');
    expect(err.message).toContain('LOG_LEVEL');
  });
});

describe('TOKEN_ENCRYPTION_KEY', () => {
  it('rejects a key of the wrong length, saying how long it was', () => {
    const err = configError(() =>
      loadConfig(serverEnv({ TOKEN_ENCRYPTION_KEY: randomBytes(16).toString('base64') })),
    );
    expect(err.message).toContain('TOKEN_ENCRYPTION_KEY');
    expect(err.message).toContain('32 bytes');
    expect(err.message).toContain('16 bytes');
    expect(err.message).toContain('openssl rand -base64 32');
  });

  it('rejects a value that is not base64, saying so (not a confusing byte count)', () => {
    // Same length as a real key, but with characters outside the base64 alphabet.
    const notBase64 = `${KEY_A.slice(0, 40)}!@#$`;
    const err = configError(() => loadConfig(serverEnv({ TOKEN_ENCRYPTION_KEY: notBase64 })));
    expect(err.message).toContain('TOKEN_ENCRYPTION_KEY');
    expect(err.message).toMatch(/not (valid )?base64/i);

    // base64url of 32 bytes decodes to 32 bytes in Node, yet is not what we document: still rejected clearly.
    const base64url = randomBytes(32).toString('base64url').replace(/^./, '-');
    const err2 = configError(() => loadConfig(serverEnv({ TOKEN_ENCRYPTION_KEY: base64url })));
    expect(err2.message).toMatch(/not (valid )?base64/i);
    expect(err2.message).not.toContain('got 32 bytes');
  });

  it('never echoes the key value in the error', () => {
    const bad = randomBytes(31).toString('base64');
    const err = configError(() => loadConfig(serverEnv({ TOKEN_ENCRYPTION_KEY: bad })));
    expect(err.message).not.toContain(bad);
  });

  it('parses several comma-separated keys in order (the first encrypts, all decrypt)', () => {
    const c = loadConfig(serverEnv({ TOKEN_ENCRYPTION_KEY: ` ${KEY_B} , ${KEY_A},` }));
    expect(c.tokenEncryptionKeys.map((k) => k.toString('base64'))).toEqual([KEY_B, KEY_A]);
  });

  it('names which key of several is wrong', () => {
    const err = configError(() => parseEncryptionKeys(`${KEY_A},${KEY_B},AAAA`));
    expect(err.message).toContain('#3');
  });

  it('rejects a value that is only commas and spaces', () => {
    const err = configError(() => parseEncryptionKeys(' , ,'));
    expect(err.message).toContain('TOKEN_ENCRYPTION_KEY');
  });
});

describe('server mode (DATABASE_URL set)', () => {
  it.each([
    ['no ADMIN_API_KEY', { ADMIN_API_KEY: undefined }, ['ADMIN_API_KEY'], ['TOKEN_ENCRYPTION_KEY']],
    [
      'no TOKEN_ENCRYPTION_KEY',
      { TOKEN_ENCRYPTION_KEY: undefined },
      ['TOKEN_ENCRYPTION_KEY'],
      ['ADMIN_API_KEY'],
    ],
    [
      'both blank',
      { ADMIN_API_KEY: '', TOKEN_ENCRYPTION_KEY: ' ' },
      ['ADMIN_API_KEY', 'TOKEN_ENCRYPTION_KEY'],
      [],
    ],
  ])('requires the keys: %s', (_label, over, named, notNamed) => {
    const err = configError(() => loadConfig(serverEnv(over)));
    for (const n of named) expect(err.message).toContain(n);
    for (const n of notNamed) expect(err.message).not.toContain(n);
    expect(err.message).toContain('DATABASE_URL');
  });

  it('never writes generated keys to DATA_DIR', () => {
    expect(() => loadConfig(serverEnv({ ADMIN_API_KEY: undefined }))).toThrow(ConfigError);
    expect(() => statSync(join(dir, 'admin-api-key'))).toThrow();
    expect(() => statSync(join(dir, 'token-encryption-key'))).toThrow();
  });
});

describe('embedded mode (no DATABASE_URL) without keys', () => {
  it('generates both keys in DATA_DIR with mode 0600, notes where, and reuses them next time', () => {
    const dataDir = join(dir, 'nested', 'data'); // does not exist yet
    const first = loadConfig({ DATA_DIR: dataDir });
    expect(first.databaseUrl).toBeUndefined();

    const adminPath = join(dataDir, 'admin-api-key');
    const keyPath = join(dataDir, 'token-encryption-key');
    for (const p of [adminPath, keyPath]) {
      expect(statSync(p).mode & 0o777).toBe(0o600);
    }
    expect(readFileSync(adminPath, 'utf8').trim()).toBe(first.adminApiKey);
    expect(first.adminApiKey.length).toBeGreaterThanOrEqual(16);
    expect(first.tokenEncryptionKeys).toHaveLength(1);
    expect(first.tokenEncryptionKeys[0]!.length).toBe(32);
    expect(
      Buffer.from(readFileSync(keyPath, 'utf8').trim(), 'base64').equals(first.tokenEncryptionKeys[0]!),
    ).toBe(true);
    expect(first.startupNotes.some((n) => n.includes(adminPath))).toBe(true);
    expect(first.startupNotes.some((n) => n.includes(keyPath))).toBe(true);
    // Notes never contain the secrets themselves.
    expect(first.startupNotes.join('\n')).not.toContain(first.adminApiKey);

    const second = loadConfig({ DATA_DIR: dataDir });
    expect(second.adminApiKey).toBe(first.adminApiKey);
    expect(second.tokenEncryptionKeys[0]!.equals(first.tokenEncryptionKeys[0]!)).toBe(true);
    expect(second.startupNotes.some((n) => n.includes(adminPath))).toBe(true);
  });

  it('generates different keys for different data directories', () => {
    const a = loadConfig({ DATA_DIR: join(dir, 'a') });
    const b = loadConfig({ DATA_DIR: join(dir, 'b') });
    expect(a.adminApiKey).not.toBe(b.adminApiKey);
    expect(a.tokenEncryptionKeys[0]!.equals(b.tokenEncryptionKeys[0]!)).toBe(false);
  });

  it('resolves a relative DATA_DIR to an absolute path', () => {
    const c = loadConfig({ DATA_DIR: 'relative-data', ADMIN_API_KEY: ADMIN, TOKEN_ENCRYPTION_KEY: KEY_A });
    expect(c.dataDir).toBe(join(process.cwd(), 'relative-data'));
  });

  it('uses given keys instead of generating, and generates only the missing one', () => {
    const c = loadConfig({ DATA_DIR: dir, ADMIN_API_KEY: ADMIN });
    expect(c.adminApiKey).toBe(ADMIN);
    expect(() => statSync(join(dir, 'admin-api-key'))).toThrow();
    expect(statSync(join(dir, 'token-encryption-key')).isFile()).toBe(true);
    expect(c.startupNotes).toHaveLength(1);
    expect(c.startupNotes[0]).toContain('TOKEN_ENCRYPTION_KEY');
  });

  it('reads a key file an operator wrote by hand (trailing newline ignored)', () => {
    writeFileSync(join(dir, 'admin-api-key'), 'operator-chosen-admin-key-0001\n', { mode: 0o600 });
    writeFileSync(join(dir, 'token-encryption-key'), `${KEY_B}\n`, { mode: 0o600 });
    const c = loadConfig({ DATA_DIR: dir });
    expect(c.adminApiKey).toBe('operator-chosen-admin-key-0001');
    expect(c.tokenEncryptionKeys[0]!.toString('base64')).toBe(KEY_B);
  });

  it.each([
    ['too short', 'admin\n'],
    ['empty', '\n'],
  ])(
    'refuses a hand-written admin key file that is %s (the variable’s own 16-character rule)',
    (_n, text) => {
      writeFileSync(join(dir, 'admin-api-key'), text, { mode: 0o600 });
      expect(() => loadConfig({ DATA_DIR: dir })).toThrow(
        /admin-api-key: the admin key must be at least 16 characters/,
      );
    },
  );
});

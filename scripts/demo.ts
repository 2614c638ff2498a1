/**
 * `npm run demo`: the sandbox (scripts/sandbox.ts) on this machine, with a loud banner.
 *
 *   npm run demo                          # data in ./data-demo, http://127.0.0.1:3000
 *   npm run demo -- --port=3001 --data-dir=/tmp/demo
 *   OPENAI_API_KEY=sk-... npm run demo    # the real model; Google stays emulated
 *
 * Only this explicit command starts the sandbox. It reads OPENAI_API_KEY / OPENAI_BASE_URL /
 * OPENAI_MODEL, PORT and LOG_LEVEL from the environment and nothing else: DATABASE_URL, DATA_DIR and
 * the keys of a real deployment are ignored, so the demo never touches real data.
 */
import { ConfigError } from '../src/config.js';
import { DataDirLockedError } from '../src/store/data-dir-lock.js';
import { type Sandbox, startSandbox } from './sandbox.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function flag(name: string): string | undefined {
  const prefix = `--${name}=`;
  return process.argv.find((a) => a.startsWith(prefix))?.slice(prefix.length);
}

function banner(s: Sandbox): string {
  const color = process.stdout.isTTY && !process.env.NO_COLOR;
  const paint = (code: string, text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const rule = paint('33', '═'.repeat(78));
  const row = (label: string, value: string) => `  ${paint('1', label.padEnd(11))}${value}`;
  return [
    '',
    rule,
    paint('1;33', '  SANDBOX MODE: a local demo, not a deployment'),
    `  Google Calendar is emulated in this process: no real calendar, no real invitations,`,
    `  Meet links are made up. ${s.model === 'OpenAI' ? 'The model is the real OpenAI API.' : 'The model is a small deterministic script (set OPENAI_API_KEY for the real one).'}`,
    rule,
    row('Chat', paint('1;36', s.chatUrl)),
    row('Meetings', paint('36', s.meetingsUrl)),
    row('API docs', paint('36', s.docsUrl)),
    row('Admin key', paint('1', s.adminKey)),
    row('Owner', `${s.ownerId} (agent ${s.agentId})`),
    row('Data', `${s.dataDir}  (delete it to start over)`),
    '',
    `  Try: ${paint('1', '“I’d like a demo tomorrow at 3pm”')}, then your name and email.`,
    '  Stop with Ctrl+C.',
    rule,
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const logLevel = process.env.LOG_LEVEL ?? 'warn';
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}`);
  }
  const portText = flag('port') ?? process.env.PORT ?? '3000';
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new ConfigError(`--port: not a port: ${portText}`);

  let sandbox: Sandbox;
  try {
    sandbox = await startSandbox({
      dataDir: flag('data-dir') ?? './data-demo',
      port,
      openaiApiKey: process.env.OPENAI_API_KEY || undefined,
      openaiBaseUrl: process.env.OPENAI_BASE_URL || undefined,
      openaiModel: process.env.OPENAI_MODEL || undefined,
      logLevel: logLevel as (typeof LOG_LEVELS)[number],
    });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EADDRINUSE') {
      throw new ConfigError(`port ${port} is in use; try: npm run demo -- --port=${port + 1}`);
    }
    throw err;
  }
  process.stdout.write(banner(sandbox));

  let stopping = false;
  const shutdown = () => {
    if (stopping) process.exit(1);
    stopping = true;
    process.stdout.write('\nStopping the sandbox…\n');
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    sandbox.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`sandbox: shutdown failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

try {
  await main();
} catch (err) {
  if (err instanceof ConfigError || err instanceof DataDirLockedError) {
    process.stderr.write(`demo: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}

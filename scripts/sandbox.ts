/**
 * The sandbox: the whole service (HTTP API, worker, pages) on an embedded database, with Google and
 * (unless a real OpenAI key is given) the model emulated in this process on loopback ports, and a
 * demo owner + agent seeded through the real API. `npm run demo` and the browser test start it here.
 *
 * It is never reachable from `npm start`: nothing in src/ imports this file, and it builds its own
 * configuration instead of reading the environment, so a deployment's DATABASE_URL, DATA_DIR or keys
 * cannot leak in (and an environment variable cannot switch it on).
 */
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import type pino from 'pino';
import { type Application, createApplication } from '../src/app.js';
import { type LogLevel, loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { type GoogleEmulator, startGoogleEmulator } from '../test/emulators/google.js';
import { type OpenAIEmulator, startOpenAIEmulator } from '../test/emulators/openai.js';
import { sandboxResponder } from '../test/emulators/sandbox-model.js';

export const DEMO_OWNER_ID = 'demo-owner';
export const DEMO_OWNER_EMAIL = 'owner@demo.example';
export const DEMO_AGENT_NAME = 'Acme Studio assistant';
const DEMO_PROMPT =
  'You are the friendly assistant of Acme Studio, a small product design agency. Visitors come to ' +
  'book a free 30-minute demo or consultation call. Be brief and warm.';

export interface SandboxOptions {
  /** Embedded database, generated admin and encryption keys. */
  dataDir: string;
  /** Default 3000; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1: the sandbox is for this machine. */
  host?: string;
  /** A real OpenAI key: the model is then real (Google stays emulated). */
  openaiApiKey?: string;
  /** With a real key: an OpenAI-compatible server instead of api.openai.com. */
  openaiBaseUrl?: string;
  openaiModel?: string;
  /** The demo agent's zone; default this machine's. */
  timezone?: string;
  /** Default 'warn'. */
  logLevel?: LogLevel;
  logDestination?: pino.DestinationStream;
}

export interface Sandbox {
  readonly app: Application;
  /** e.g. http://127.0.0.1:3000 */
  readonly url: string;
  readonly chatUrl: string;
  readonly meetingsUrl: string;
  readonly docsUrl: string;
  readonly adminKey: string;
  readonly ownerId: string;
  readonly agentId: string;
  readonly dataDir: string;
  readonly model: 'sandbox script' | 'OpenAI';
  readonly google: GoogleEmulator;
  readonly openai: OpenAIEmulator | undefined;
  stop(): Promise<void>;
}

function machineZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

export async function startSandbox(options: SandboxOptions): Promise<Sandbox> {
  const dataDir = resolve(options.dataDir);
  const zone = options.timezone ?? machineZone();
  const realModel = Boolean(options.openaiApiKey);
  const clientId = 'sandbox-client.apps.googleusercontent.com';
  const clientSecret = randomBytes(12).toString('hex');
  const google = await startGoogleEmulator({ clientId, clientSecret });
  let openai: OpenAIEmulator | undefined;
  let app: Application | undefined;
  const stopEmulators = async () => {
    await google.close();
    await openai?.close();
  };
  try {
    const modelEnv: Record<string, string> = {};
    if (realModel) {
      modelEnv.OPENAI_API_KEY = options.openaiApiKey ?? '';
      if (options.openaiBaseUrl) modelEnv.OPENAI_BASE_URL = options.openaiBaseUrl;
      if (options.openaiModel) modelEnv.OPENAI_MODEL = options.openaiModel;
    } else {
      const apiKey = `sk-sandbox-${randomBytes(16).toString('hex')}`;
      openai = await startOpenAIEmulator({ apiKey });
      openai.responder = sandboxResponder();
      modelEnv.OPENAI_API_KEY = apiKey;
      modelEnv.OPENAI_BASE_URL = openai.baseURL;
      modelEnv.OPENAI_MODEL = 'gpt-4o-mini';
    }
    const config = loadConfig({
      DATA_DIR: dataDir,
      PORT: String(options.port ?? 3000),
      HOST: options.host ?? '127.0.0.1',
      LOG_LEVEL: options.logLevel ?? 'warn',
      GOOGLE_CLIENT_ID: clientId,
      GOOGLE_CLIENT_SECRET: clientSecret,
      GOOGLE_API_ROOT_URL: google.rootUrl,
      GOOGLE_OAUTH_TOKEN_URL: google.tokenUrl,
      ...modelEnv,
    });
    let homeAgentId: string | undefined;
    app = await createApplication(config, {
      logger: createLogger(config.logLevel, options.logDestination),
      pages: { sandbox: { homeAgentId: () => homeAgentId } },
    });
    const address = await app.listen();
    const url = address.replace('://0.0.0.0:', '://127.0.0.1:').replace(/\/$/, '');

    const agentId = await seed(app, google, zone);
    homeAgentId = agentId;
    const started = app;
    return {
      app: started,
      url,
      chatUrl: `${url}/chat/${agentId}`,
      meetingsUrl: `${url}/meetings?user_id=${DEMO_OWNER_ID}`,
      docsUrl: `${url}/docs`,
      adminKey: config.adminApiKey,
      ownerId: DEMO_OWNER_ID,
      agentId,
      dataDir,
      model: realModel ? 'OpenAI' : 'sandbox script',
      google,
      openai,
      async stop() {
        await started.stop();
        await stopEmulators();
      },
    };
  } catch (err) {
    await app?.stop();
    await stopEmulators();
    throw err;
  }
}

/**
 * Connects the demo owner's (emulated) Google Calendar and finds or creates the demo agent, through
 * the same HTTP API the external dashboard uses. The emulator forgets its grants when the process
 * ends, so the owner is reconnected with a fresh grant on every start; the agent is kept.
 */
async function seed(app: Application, google: GoogleEmulator, zone: string): Promise<string> {
  const admin = { authorization: `Bearer ${app.config.adminApiKey}` };
  const grant = google.grant({ email: DEMO_OWNER_EMAIL, timeZone: zone });
  const connected = await app.http.inject({
    method: 'POST',
    url: `/api/users/${DEMO_OWNER_ID}/google-calendar/connect`,
    headers: admin,
    payload: {
      access_token: grant.access_token,
      refresh_token: grant.refresh_token,
      token_expiry: grant.expiry.toISOString(),
      scope: `https://www.googleapis.com/auth/calendar ${grant.scope}`,
    },
  });
  if (connected.statusCode !== 200)
    throw new Error(`sandbox: connecting the demo calendar failed: ${connected.body}`);

  const listed = await app.http.inject({
    url: `/api/users/${DEMO_OWNER_ID}/agents?limit=200`,
    headers: admin,
  });
  if (listed.statusCode !== 200) throw new Error(`sandbox: listing agents failed: ${listed.body}`);
  const existing = (listed.json() as { agents: Array<{ agent_id: string; name: string }> }).agents.find(
    (a) => a.name === DEMO_AGENT_NAME,
  );
  if (existing) return existing.agent_id;

  const created = await app.http.inject({
    method: 'POST',
    url: '/api/agents',
    headers: admin,
    payload: {
      user_id: DEMO_OWNER_ID,
      name: DEMO_AGENT_NAME,
      system_prompt: DEMO_PROMPT,
      timezone: zone,
      meeting_duration_minutes: 30,
    },
  });
  if (created.statusCode !== 201) throw new Error(`sandbox: creating the demo agent failed: ${created.body}`);
  return (created.json() as { agent_id: string }).agent_id;
}

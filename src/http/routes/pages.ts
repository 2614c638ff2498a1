import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { AgentStore } from '../../store/agents.js';

/**
 * The browser pages: a customer chat window (`/chat/:agent_id`) and the owner's meetings view
 * (`/meetings`). Plain HTML, CSS and JavaScript from `public/`, read once at start-up: nothing is
 * built or downloaded. The pages call the public JSON API like any other client.
 */
export interface PageRouteDeps {
  agents: Pick<AgentStore, 'get'>;
  /**
   * Set only by the sandbox (`npm run demo`): `/` then opens the demo agent's chat and every page
   * says that Google and the model are emulated. A real deployment shows a page asking for an agent id.
   */
  sandbox?: { homeAgentId: () => string | undefined };
  /** Where the page files live; default `public/` at the repository root. */
  directory?: string;
}

// Pages load only their own files and talk only to this origin; no inline script or style.
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};
const ID = /^[A-Za-z0-9_-]{1,50}$/;
const DEFAULT_DIRECTORY = fileURLToPath(new URL('../../../public/', import.meta.url));

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

function loadAssets(directory: string): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const name of readdirSync(directory)) {
    const type = TYPES[extname(name)];
    if (!type || name.startsWith('.')) continue;
    const body = readFileSync(join(directory, name));
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
    assets.set(name, { body, type, etag });
  }
  return assets;
}

/** HTML-escapes text placed into a page template. */
export function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  );
}

function securityHeaders(reply: FastifyReply): FastifyReply {
  return reply
    .header('content-security-policy', CONTENT_SECURITY_POLICY)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('x-frame-options', 'DENY')
    .header('cross-origin-opener-policy', 'same-origin');
}

export const pageRoutes: FastifyPluginAsync<PageRouteDeps> = async (app, deps) => {
  const assets = loadAssets(deps.directory ?? DEFAULT_DIRECTORY);
  const template = (name: string) => {
    const asset = assets.get(name);
    if (!asset) throw new Error(`page template ${name} is missing`);
    return asset.body.toString('utf8');
  };
  const notice = deps.sandbox
    ? '<p class="sandbox-notice" role="note"><strong>Sandbox</strong> Google Calendar and the AI model are emulated on this machine: no real invitations are sent.</p>'
    : '';

  /** Fills `{{name}}` placeholders; values are escaped unless listed in `raw`. */
  const render = (name: string, values: Record<string, string>, raw: Record<string, string> = {}) =>
    template(name).replace(/\{\{(\w+)\}\}/g, (_m, key: string) =>
      key === 'notice' ? notice : (raw[key] ?? escapeHtml(values[key] ?? '')),
    );

  const sendHtml = (reply: FastifyReply, status: number, html: string) =>
    securityHeaders(reply)
      .code(status)
      .header('content-type', TYPES['.html'])
      .header('cache-control', 'no-store')
      .send(html);

  const home = (reply: FastifyReply, status = 200, error = '') =>
    sendHtml(
      reply,
      status,
      render(
        'index.html',
        {},
        { error: error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : '' },
      ),
    );

  app.get('/', { schema: { hide: true } }, async (_req, reply) => {
    const agentId = deps.sandbox?.homeAgentId();
    if (agentId) return reply.redirect(`/chat/${encodeURIComponent(agentId)}`, 302);
    return home(reply);
  });

  // The form on `/` submits ?agent_id=... here.
  app.get<{ Querystring: { agent_id?: string } }>('/chat', { schema: { hide: true } }, async (req, reply) => {
    const id = typeof req.query.agent_id === 'string' ? req.query.agent_id.trim() : '';
    if (!ID.test(id)) return home(reply, 400, 'An agent id is letters, digits, _ and -, e.g. agt_abc123.');
    return reply.redirect(`/chat/${encodeURIComponent(id)}`, 302);
  });

  app.get<{ Params: { agent_id: string } }>(
    '/chat/:agent_id',
    { schema: { hide: true } },
    async (req, reply) => {
      const id = req.params.agent_id;
      const agent = ID.test(id) ? await deps.agents.get(id) : undefined;
      if (!agent) return home(reply, 404, `There is no agent “${id.slice(0, 50)}”. Check the link.`);
      return sendHtml(
        reply,
        200,
        render('chat.html', {
          agent_id: agent.agentId,
          agent_name: agent.name,
          agent_initial: (Array.from(agent.name.trim())[0] ?? '?').toUpperCase(),
        }),
      );
    },
  );

  app.get('/meetings', { schema: { hide: true } }, async (_req, reply) =>
    sendHtml(reply, 200, render('meetings.html', {})),
  );

  app.get<{ Params: { file: string } }>('/assets/:file', { schema: { hide: true } }, async (req, reply) => {
    const asset = assets.get(req.params.file);
    if (!asset || asset.type === TYPES['.html']) {
      return reply.code(404).send({ success: false, error: `No asset ${req.params.file}` });
    }
    securityHeaders(reply).header('etag', asset.etag).header('cache-control', 'no-cache');
    if (req.headers['if-none-match'] === asset.etag) return reply.code(304).send();
    return reply.header('content-type', asset.type).send(asset.body);
  });
};

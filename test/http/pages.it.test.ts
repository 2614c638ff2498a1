import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';

// The pages of a normal (non-sandbox) start: no redirect on `/`, no sandbox notice, strict headers.
let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t?.close();
});

const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

describe('pages', () => {
  it('`/` asks for an agent id outside the sandbox', async () => {
    const res = await t.app.http.inject({ url: '/' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(res.headers['content-security-policy']).toBe(CSP);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.body).toContain('<label for="agent-id">Agent id</label>');
    expect(res.body).not.toContain('sandbox-notice');
    expect(res.body).not.toMatch(/\{\{\w+\}\}/);
  });

  it('the form on `/` leads to the chat; a malformed id is explained', async () => {
    const ok = await t.app.http.inject({ url: '/chat?agent_id=agt_abc' });
    expect(ok.statusCode).toBe(302);
    expect(ok.headers.location).toBe('/chat/agt_abc');
    const bad = await t.app.http.inject({ url: '/chat?agent_id=%3Cscript%3E' });
    expect(bad.statusCode).toBe(400);
    expect(bad.body).toContain('role="alert"');
  });

  it('renders the chat with the agent name escaped, never as markup', async () => {
    const created = await t.app.http.inject({
      method: 'POST',
      url: '/api/agents',
      headers: t.admin,
      payload: { user_id: 'owner-pages', name: '<img src=x onerror=alert(1)> "Bob" & Co' },
    });
    const agentId = created.json().agent_id as string;
    const res = await t.app.http.inject({ url: `/chat/${agentId}` });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-security-policy']).toBe(CSP);
    expect(res.body).toContain(`<meta name="agent-id" content="${agentId}">`);
    expect(res.body).toContain('&lt;img src=x onerror=alert(1)&gt; &quot;Bob&quot; &amp; Co');
    expect(res.body).not.toContain('<img src=x');
    expect(res.body).not.toMatch(/\{\{\w+\}\}/);
    // No inline script or style: everything the CSP allows comes from /assets.
    expect(res.body).not.toMatch(/<script(?![^>]*\bsrc=)/);
    expect(res.body).not.toMatch(/\sstyle=/);
  });

  it('an unknown agent is a 404 page', async () => {
    const res = await t.app.http.inject({ url: '/chat/agt_missing' });
    expect(res.statusCode).toBe(404);
    expect(res.body).toContain('There is no agent “agt_missing”');
  });

  it('serves /meetings and the assets with validators; nothing outside the asset list', async () => {
    const page = await t.app.http.inject({ url: '/meetings' });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('<label for="admin-key">Admin key</label>');

    const js = await t.app.http.inject({ url: '/assets/chat.js' });
    expect(js.statusCode).toBe(200);
    expect(js.headers['content-type']).toBe('text/javascript; charset=utf-8');
    const etag = js.headers.etag as string;
    const again = await t.app.http.inject({ url: '/assets/chat.js', headers: { 'if-none-match': etag } });
    expect(again.statusCode).toBe(304);

    for (const url of ['/assets/chat.html', '/assets/..%2Fpackage.json', '/assets/nope.js']) {
      expect((await t.app.http.inject({ url })).statusCode, url).toBe(404);
    }
  });
});

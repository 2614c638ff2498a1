import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_OWNER_EMAIL, type Sandbox, startSandbox } from '../../scripts/sandbox.js';

/**
 * The sandbox (`npm run demo`) driven in a real Chromium: greeting -> booked meeting in the chat page,
 * then the meeting listed and cancelled in /meetings. Screenshots go to test-results/; the README's
 * docs/chat.png is written when it is missing or with UPDATE_SCREENSHOTS=1 (so ordinary test runs
 * leave the working tree clean).
 */
const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) {
  console.warn(
    `[browser test] SKIPPED: ${CHROMIUM} is missing. Install it with \`apt-get install -y chromium\` ` +
      '(.ci/run does this) to run the end-to-end browser test.',
  );
}

const RESULTS = 'test-results';
const README_SCREENSHOT = 'docs/chat.png';

/** Sends one chat message with the keyboard and waits for the agent's next reply to contain `expected`. */
async function say(page: Page, text: string, expected: string): Promise<void> {
  const replies = page.locator('#messages li.msg-assistant:not(#welcome)');
  const before = await replies.count();
  await page.locator('#message').fill(text);
  await page.locator('#message').press('Enter');
  await page.locator('#messages li.msg-customer').filter({ hasText: text }).waitFor();
  await replies.nth(before).waitFor({ timeout: 15_000 });
  const reply = (await replies.nth(before).locator('.bubble').textContent()) ?? '';
  expect(reply).toContain(expected);
}

describe('sandbox in a real browser', () => {
  let sandbox: Sandbox;
  let browser: Browser;
  let dataDir: string;

  beforeAll(async () => {
    if (!hasChromium) return;
    dataDir = mkdtempSync(join(tmpdir(), 'agent-meetings-demo-'));
    const launching = chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    sandbox = await startSandbox({ dataDir, port: 0, logLevel: 'error' });
    browser = await launching;
    // The emulated model answers within milliseconds; a little latency makes the typing indicator
    // observable.
    if (sandbox.openai) sandbox.openai.latencyMs = 400;
    mkdirSync(RESULTS, { recursive: true });
  });

  afterAll(async () => {
    await browser?.close();
    await sandbox?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it.runIf(hasChromium)(
    'chats from greeting to a booked meeting, then lists and cancels it in /meetings',
    async () => {
      const context = await browser.newContext({ viewport: { width: 900, height: 1300 }, locale: 'en-US' });
      const page = await context.newPage();
      const problems: string[] = [];
      page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
      page.on('console', (msg) => {
        if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
      });

      // `/` opens the demo agent's chat (sandbox only).
      await page.goto(sandbox.url);
      expect(new URL(page.url()).pathname).toBe(`/chat/${sandbox.agentId}`);
      await page.getByText('Sandbox', { exact: true }).waitFor();
      await page.locator('#welcome').getByText('I can book a video call').waitFor();

      await say(page, 'Hello!', 'I can book a video call with our team');

      // The typing indicator shows while the reply is pending and goes away with it.
      await page.locator('#message').fill("I'd like a demo tomorrow at 3pm");
      await page.locator('#message').press('Enter');
      await page.locator('#typing').waitFor({ state: 'visible' });
      await page.locator('#messages li.msg-assistant').filter({ hasText: 'May I have your name?' }).waitFor();
      await page.locator('#typing').waitFor({ state: 'hidden' });

      await say(page, 'Ada Lovelace', 'What email address should I send the invitation to?');
      await say(page, 'ada@example.com', 'Meeting confirmed');

      const confirmation = page.locator('#messages li.msg-confirmed');
      await confirmation.waitFor();
      const meet = confirmation.locator('a.meet-link');
      await meet.waitFor({ state: 'visible' });
      const href = await meet.getAttribute('href');
      expect(href).toMatch(/^https:\/\/meet\.google\.com\/[a-z]{3}-[a-z]{4}-[a-z]{3}$/);
      expect(await meet.textContent()).toBe(href);
      expect(await meet.getAttribute('target')).toBe('_blank');
      expect(await meet.getAttribute('rel')).toBe('noopener noreferrer');
      await meet.click({ trial: true }); // visible, enabled, not covered: clickable
      expect(await confirmation.textContent()).toContain('Meeting scheduled for tomorrow at 3 PM');
      await page.locator('#message').focus();
      const chatShot = await page.screenshot({ path: join(RESULTS, 'chat.png') });
      if (!existsSync(README_SCREENSHOT) || process.env.UPDATE_SCREENSHOTS) {
        mkdirSync('docs', { recursive: true });
        writeFileSync(README_SCREENSHOT, chatShot);
      }

      // A reload keeps the conversation (id + token in localStorage) and the live feed resumes.
      const count = await page.locator('#messages li.msg:not(#welcome)').count();
      await page.reload();
      await page.locator('#messages li.msg-confirmed a.meet-link').waitFor();
      expect(await page.locator('#messages li.msg:not(#welcome)').count()).toBe(count);
      await say(page, 'thanks!', 'See you in the meeting');

      await page.screenshot({ path: join(RESULTS, 'chat-after-reload.png') });

      // The owner's view: admin key asked once, meeting in the table and the week calendar.
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.goto(sandbox.meetingsUrl);
      await page.getByLabel('Admin key').fill(sandbox.adminKey);
      expect(await page.getByLabel('Owner user id').inputValue()).toBe(sandbox.ownerId);
      await page.getByRole('button', { name: 'Show meetings' }).click();
      const row = page.locator('#meetings-table tbody tr').filter({ hasText: 'Demo with Ada Lovelace' });
      await row.waitFor();
      expect(await row.locator('.badge').textContent()).toBe('scheduled');
      expect(await row.textContent()).toContain('ada@example.com');
      expect(await row.locator('a').getAttribute('href')).toBe(href);
      const event = page.locator('.cal-event').filter({ hasText: 'Demo with Ada Lovelace' });
      // Tomorrow is in next week's grid when today is Sunday.
      if ((await event.count()) === 0) await page.getByRole('button', { name: 'Next week' }).click();
      await event.waitFor({ state: 'visible' });
      await page.screenshot({ path: join(RESULTS, 'meetings.png'), fullPage: true });

      // The key is kept for the tab: a reload goes straight to the list.
      await page.reload();
      await row.waitFor();

      page.once('dialog', (dialog) => void dialog.accept());
      await row.getByRole('button', { name: /^Cancel Demo with Ada Lovelace/ }).click();
      await row.locator('.badge', { hasText: 'cancelled' }).waitFor();
      await page.locator('#status').getByText('Cancelled “Demo with Ada Lovelace”').waitFor();
      expect(await row.getByRole('button').count()).toBe(0);
      await page.screenshot({ path: join(RESULTS, 'meetings-cancelled.png'), fullPage: true });

      // The cancellation reached the database and (emulated) Google.
      const listed = await sandbox.app.http.inject({
        url: `/api/users/${sandbox.ownerId}/meetings`,
        headers: { authorization: `Bearer ${sandbox.adminKey}` },
      });
      const meetings = listed.json().meetings as Array<{ status: string; meet_link: string }>;
      expect(meetings).toHaveLength(1);
      expect(meetings[0]).toMatchObject({ status: 'cancelled', meet_link: href });
      expect(sandbox.google.events(DEMO_OWNER_EMAIL).filter((e) => e.status !== 'cancelled')).toHaveLength(0);

      expect(problems).toEqual([]);
      await context.close();
    },
  );
});

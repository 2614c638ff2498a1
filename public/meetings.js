// The owner's meetings: a week calendar and a table, with cancel buttons. Uses the admin API:
//   GET  /api/users/:user_id/meetings   (paginated with next_cursor)
//   POST /api/meetings/:meeting_id/cancel
// The admin key is asked once and kept in sessionStorage (this tab only). Text from the API is only
// ever inserted as text nodes.

const KEY_STORAGE = 'agent-meetings:admin-key';
const USER_STORAGE = 'agent-meetings:user-id';
const START_HOUR = 7;
const END_HOUR = 21;
const HOUR_PX = 44;
const MAX_PAGES = 10;

const $ = (id) => document.getElementById(id);
const loginForm = $('login');
const loginError = $('login-error');
const keyInput = $('admin-key');
const userInput = $('user-id');
const content = $('content');
const owner = $('owner');
const statusBox = $('status');
const refreshButton = $('refresh');
const signOutButton = $('sign-out');
const calendar = $('calendar');
const weekTitle = $('week-title');
const tableBody = document.querySelector('#meetings-table tbody');
const empty = $('empty');

const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
const fmtTime = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const fmtHour = new Intl.DateTimeFormat(undefined, { hour: 'numeric' });
const fmtDay = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric' });
const fmtLongDay = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
const fmtWhen = new Intl.DateTimeFormat(undefined, {
  weekday: 'short',
  month: 'short',
  day: 'numeric',
  year: 'numeric',
  hour: 'numeric',
  minute: '2-digit',
});
const fmtRange = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', year: 'numeric' });

let adminKey = sessionStorage.getItem(KEY_STORAGE);
let userId = new URLSearchParams(location.search).get('user_id') || sessionStorage.getItem(USER_STORAGE);
let meetings = [];
let weekStart = startOfWeek(new Date());

function startOfWeek(date) {
  const d = new Date(date.getFullYear(), date.getMonth(), date.getDate());
  const fromMonday = (d.getDay() + 6) % 7;
  d.setDate(d.getDate() - fromMonday);
  return d;
}

function addDays(date, days) {
  const d = new Date(date);
  d.setDate(d.getDate() + days);
  return d;
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name.startsWith('aria-') || name.startsWith('data-')) node.setAttribute(name, value);
    else node[name] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function setStatus(text) {
  statusBox.textContent = text;
}

function showLogin(error = '') {
  content.hidden = true;
  owner.hidden = true;
  refreshButton.hidden = true;
  signOutButton.hidden = !adminKey;
  loginForm.hidden = false;
  loginError.textContent = error;
  loginError.hidden = !error;
  userInput.value = userId ?? '';
  keyInput.required = !adminKey;
  keyInput.placeholder = adminKey ? 'Saved for this tab' : '';
  (adminKey ? userInput : keyInput).focus();
}

async function api(path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: { authorization: `Bearer ${adminKey}`, ...(options.headers ?? {}) },
  });
  let data = null;
  try {
    data = await res.json();
  } catch {
    // Not JSON.
  }
  if (!res.ok) {
    const error = new Error(data?.error ?? `The server answered ${res.status}`);
    error.status = res.status;
    throw error;
  }
  return data;
}

async function load() {
  setStatus('Loading meetings…');
  try {
    const all = [];
    let cursor = null;
    for (let page = 0; page < MAX_PAGES; page++) {
      const params = new URLSearchParams({ limit: '200' });
      if (cursor) params.set('cursor', cursor);
      const data = await api(`/api/users/${encodeURIComponent(userId)}/meetings?${params}`);
      all.push(...data.meetings);
      cursor = data.next_cursor;
      if (!cursor) break;
    }
    meetings = all.sort((a, b) => a.meeting_time.localeCompare(b.meeting_time));
    loginForm.hidden = true;
    content.hidden = false;
    owner.hidden = false;
    owner.textContent = `Owner: ${userId}`;
    refreshButton.hidden = false;
    signOutButton.hidden = false;
    render();
    const upcoming = meetings.filter(
      (m) => m.status === 'scheduled' && new Date(m.meeting_time) > new Date(),
    );
    setStatus(
      `${meetings.length} meeting${meetings.length === 1 ? '' : 's'}, ${upcoming.length} upcoming. Updated ${fmtTime.format(new Date())}.`,
    );
  } catch (err) {
    if (err.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      adminKey = null;
      showLogin('That admin key was not accepted. Check it and try again.');
    } else if (err.status === 400) {
      showLogin(`That owner user id is not valid: ${err.message}`);
    } else {
      setStatus(`Could not load the meetings: ${err.message}`);
    }
  }
}

function render() {
  renderCalendar();
  renderTable();
}

function renderCalendar() {
  const days = Array.from({ length: 7 }, (_, i) => addDays(weekStart, i));
  const last = days[6];
  weekTitle.textContent = `Week of ${fmtRange.format(weekStart)} – ${fmtRange.format(last)}`;
  $('zone-note').textContent =
    `Times in your browser’s time zone (${zone}); the grid shows ${START_HOUR}:00–${END_HOUR}:00.`;
  calendar.replaceChildren();
  calendar.style.setProperty('--hours', String(END_HOUR - START_HOUR));
  calendar.style.setProperty('--hour-px', `${HOUR_PX}px`);

  calendar.append(el('div', { class: 'cal-corner', 'aria-hidden': 'true' }));
  const today = new Date();
  for (const day of days) {
    calendar.append(
      el('div', {
        class: `cal-day-head${sameDay(day, today) ? ' is-today' : ''}`,
        text: fmtDay.format(day),
        'aria-hidden': 'true',
      }),
    );
  }
  const gutter = el('div', { class: 'cal-gutter', 'aria-hidden': 'true' });
  for (let h = START_HOUR; h < END_HOUR; h++) {
    gutter.append(el('span', { text: fmtHour.format(new Date(2000, 0, 1, h)) }));
  }
  calendar.append(gutter);

  for (const day of days) {
    const dayMeetings = meetings.filter((m) => sameDay(new Date(m.meeting_time), day));
    const column = el('section', {
      class: `cal-col${sameDay(day, today) ? ' is-today' : ''}`,
      'aria-label': `${fmtLongDay.format(day)}: ${dayMeetings.length || 'no'} meeting${dayMeetings.length === 1 ? '' : 's'}`,
    });
    const items = el('ol', { class: 'cal-events' });
    // Overlapping meetings share the column side by side.
    const laneEnds = [];
    const placed = dayMeetings.map((m) => {
      const start = new Date(m.meeting_time);
      const end = new Date(start.getTime() + m.duration_minutes * 60_000);
      let lane = laneEnds.findIndex((t) => t <= start.getTime());
      if (lane === -1) lane = laneEnds.length;
      laneEnds[lane] = end.getTime();
      return { m, start, end, lane };
    });
    for (const { m, start, end, lane } of placed) {
      const minutes = (start.getHours() - START_HOUR) * 60 + start.getMinutes();
      const top = Math.min(Math.max(minutes, 0), (END_HOUR - START_HOUR) * 60 - 20);
      const height = Math.max(m.duration_minutes, 20);
      const compact = m.duration_minutes < 45;
      const item = el(
        'li',
        {
          class: `cal-event${compact ? ' is-compact' : ''}${m.status === 'cancelled' ? ' is-cancelled' : ''}`,
          'data-meeting-id': m.meeting_id,
        },
        el('span', {
          class: 'cal-event-time',
          text: compact ? fmtTime.format(start) : `${fmtTime.format(start)}–${fmtTime.format(end)}`,
        }),
        el('span', { class: 'cal-event-title', text: m.title }),
        m.status === 'cancelled' ? el('span', { class: 'sr-only', text: '(cancelled)' }) : null,
      );
      item.style.top = `${(top / 60) * HOUR_PX}px`;
      item.style.height = `${(height / 60) * HOUR_PX - 2}px`;
      item.style.left = `calc(${(lane / laneEnds.length) * 100}% + 2px)`;
      item.style.width = `calc(${100 / laneEnds.length}% - 4px)`;
      item.title = `${m.title} · ${fmtWhen.format(start)}${m.status === 'cancelled' ? ' (cancelled)' : ''}`;
      items.append(item);
    }
    column.append(items);
    calendar.append(column);
  }
}

function renderTable() {
  tableBody.replaceChildren();
  empty.hidden = meetings.length > 0;
  for (const m of meetings) {
    const start = new Date(m.meeting_time);
    const customer = el(
      'td',
      {},
      el('span', { text: m.customer_name ?? '—' }),
      m.customer_email ? el('span', { class: 'muted block', text: m.customer_email }) : null,
    );
    // Only https links become links (the value comes from Google, but a page never trusts data).
    const link = m.meet_link?.startsWith('https://')
      ? el('a', {
          href: m.meet_link,
          text: m.meet_link.replace(/^https:\/\//, ''),
          target: '_blank',
          rel: 'noopener noreferrer',
        })
      : el('span', { class: 'muted', text: '—' });
    const status = el('span', { class: `badge badge-${m.status}`, text: m.status });
    const actions = el('td', { class: 'actions' });
    if (m.status === 'scheduled') {
      const button = el('button', {
        type: 'button',
        class: 'danger',
        text: 'Cancel',
        'aria-label': `Cancel ${m.title} on ${fmtWhen.format(start)}`,
      });
      button.addEventListener('click', () => cancel(m, button));
      actions.append(button);
    }
    tableBody.append(
      el(
        'tr',
        { 'data-meeting-id': m.meeting_id },
        el(
          'td',
          {},
          el('time', { dateTime: m.meeting_time, text: fmtWhen.format(start) }),
          el('span', { class: 'muted block', text: `${m.duration_minutes} min` }),
        ),
        el('td', { text: m.title }),
        customer,
        el('td', {}, link),
        el('td', {}, status),
        actions,
      ),
    );
  }
}

async function cancel(meeting, button) {
  const when = fmtWhen.format(new Date(meeting.meeting_time));
  if (!window.confirm(`Cancel “${meeting.title}” on ${when}? Google Calendar notifies the attendees.`))
    return;
  button.disabled = true;
  setStatus(`Cancelling “${meeting.title}”…`);
  try {
    const data = await api(`/api/meetings/${encodeURIComponent(meeting.meeting_id)}/cancel`, {
      method: 'POST',
    });
    meetings = meetings.map((m) => (m.meeting_id === meeting.meeting_id ? data.meeting : m));
    render();
    setStatus(`Cancelled “${meeting.title}” on ${when}. The attendees were notified.`);
  } catch (err) {
    button.disabled = false;
    if (err.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      adminKey = null;
      showLogin('The admin key is no longer accepted.');
    } else {
      setStatus(`Could not cancel: ${err.message}`);
    }
  }
}

loginForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const key = keyInput.value.trim() || adminKey;
  const user = userInput.value.trim();
  if (!key) {
    keyInput.focus();
    return;
  }
  if (!/^[A-Za-z0-9._@-]{1,50}$/.test(user)) {
    loginError.textContent = 'The owner user id is 1–50 letters, digits and . _ @ -';
    loginError.hidden = false;
    userInput.focus();
    return;
  }
  adminKey = key;
  userId = user;
  sessionStorage.setItem(KEY_STORAGE, key);
  sessionStorage.setItem(USER_STORAGE, user);
  keyInput.value = '';
  load();
});
signOutButton.addEventListener('click', () => {
  sessionStorage.removeItem(KEY_STORAGE);
  adminKey = null;
  showLogin();
});
refreshButton.addEventListener('click', load);
$('prev-week').addEventListener('click', () => {
  weekStart = addDays(weekStart, -7);
  renderCalendar();
});
$('next-week').addEventListener('click', () => {
  weekStart = addDays(weekStart, 7);
  renderCalendar();
});
$('this-week').addEventListener('click', () => {
  weekStart = startOfWeek(new Date());
  renderCalendar();
});

if (adminKey && userId) load();
else showLogin();

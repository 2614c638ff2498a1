// The customer chat window. Talks to the public conversation API:
//   POST /api/agents/:agent_id/conversations      -> conversation id + customer token (kept in localStorage)
//   POST /api/conversations/:id/messages          -> 202; the agent answers asynchronously
//   GET  /api/conversations/:id/messages          -> history after a reload
//   GET  /api/conversations/:id/events?token=...  -> live replies (EventSource cannot send headers)
// Message text is only ever inserted as text nodes; links are built element by element.

const agentId = document.querySelector('meta[name="agent-id"]').content;
const agentName = document.querySelector('meta[name="agent-name"]').content;
const storageKey = `agent-meetings:conversation:${agentId}`;

const list = document.getElementById('messages');
const typing = document.getElementById('typing');
const errorBox = document.getElementById('error');
const form = document.getElementById('composer');
const input = document.getElementById('message');
const sendButton = document.getElementById('send');
const suggestions = document.getElementById('suggestions');
const newConversation = document.getElementById('new-conversation');
const connection = document.getElementById('connection');
const body = document.getElementById('chat-body');

/** @type {{ id: string, token: string } | null} */
let conversation = null;
/** @type {EventSource | null} */
let events = null;
let lastMessageId = null;
let lastRole = null;
let retryTimer = null;
const shown = new Set();

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });

function loadConversation() {
  try {
    const saved = JSON.parse(localStorage.getItem(storageKey) ?? 'null');
    if (saved && typeof saved.id === 'string' && typeof saved.token === 'string') return saved;
  } catch {
    // A damaged entry is treated as no conversation.
  }
  return null;
}

function saveConversation(value) {
  conversation = value;
  try {
    if (value) localStorage.setItem(storageKey, JSON.stringify(value));
    else localStorage.removeItem(storageKey);
  } catch {
    // Private mode without storage: the chat still works until the page is closed.
  }
}

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = !text;
}

function setStatus(text) {
  connection.textContent = text;
}

/** Appends `text` to `parent`, turning https:// URLs into links (text nodes only, never HTML). */
function appendLinkified(parent, text) {
  const urlPattern = /https:\/\/[^\s<>"'`]+/g;
  let from = 0;
  for (const match of text.matchAll(urlPattern)) {
    // Sentence punctuation right after a URL is not part of it.
    const raw = match[0].replace(/[.,;:!?)\]}'"]+$/, '');
    let url;
    try {
      url = new URL(raw);
    } catch {
      continue;
    }
    if (url.protocol !== 'https:') continue;
    parent.append(document.createTextNode(text.slice(from, match.index)));
    const link = document.createElement('a');
    link.href = url.href;
    link.textContent = raw;
    link.target = '_blank';
    link.rel = 'noopener noreferrer';
    if (url.hostname === 'meet.google.com') link.className = 'meet-link';
    parent.append(link);
    from = match.index + raw.length;
  }
  parent.append(document.createTextNode(text.slice(from)));
}

function renderMessage(message) {
  if (shown.has(message.message_id)) return;
  shown.add(message.message_id);
  suggestions.hidden = true;
  newConversation.hidden = false;

  const item = document.createElement('li');
  const mine = message.role === 'customer';
  item.className = `msg ${mine ? 'msg-customer' : 'msg-assistant'}`;
  item.dataset.messageId = message.message_id;
  if (!mine && message.content.includes('Meeting confirmed')) item.classList.add('msg-confirmed');

  const who = document.createElement('span');
  who.className = 'sr-only';
  who.textContent = mine ? 'You said:' : `${agentName} says:`;
  const bubble = document.createElement('div');
  bubble.className = 'bubble';
  appendLinkified(bubble, message.content);
  const when = document.createElement('time');
  when.dateTime = message.created_at;
  when.textContent = timeFormat.format(new Date(message.created_at));
  item.append(who, bubble, when);
  list.append(item);

  lastMessageId = message.message_id;
  lastRole = message.role;
  updateTyping();
  body.scrollTop = body.scrollHeight;
}

/** The agent owes a reply while the last message is the customer's. */
function updateTyping() {
  const waiting = lastRole === 'customer';
  typing.hidden = !waiting;
  list.setAttribute('aria-busy', String(waiting));
  if (waiting) body.scrollTop = body.scrollHeight;
}

function authHeaders() {
  return { authorization: `Bearer ${conversation.token}`, 'content-type': 'application/json' };
}

async function errorText(res) {
  try {
    const data = await res.json();
    if (data && typeof data.error === 'string') return data.error;
  } catch {
    // Not JSON.
  }
  return `The server answered ${res.status}`;
}

/** Opens the live feed after the last message shown; EventSource reconnects by itself with Last-Event-ID. */
function listen() {
  if (!conversation) return;
  events?.close();
  clearTimeout(retryTimer);
  const params = new URLSearchParams({ token: conversation.token });
  if (lastMessageId) params.set('after', lastMessageId);
  const source = new EventSource(
    `/api/conversations/${encodeURIComponent(conversation.id)}/events?${params}`,
  );
  events = source;
  source.addEventListener('open', () => {
    setStatus('Online · replies appear live');
  });
  source.addEventListener('message', (event) => {
    try {
      renderMessage(JSON.parse(event.data));
    } catch {
      // A malformed event is skipped; the next one carries on.
    }
  });
  source.addEventListener('error', () => {
    if (source !== events) return;
    if (source.readyState === EventSource.CLOSED) {
      // The server refused the stream (or the network failed hard): try again from the last message.
      setStatus('Reconnecting…');
      retryTimer = setTimeout(listen, 3000);
    } else {
      setStatus('Reconnecting…');
    }
  });
}

async function openConversation() {
  const res = await fetch(`/api/agents/${encodeURIComponent(agentId)}/conversations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{}',
  });
  if (!res.ok) throw new Error(await errorText(res));
  const data = await res.json();
  saveConversation({ id: data.conversation_id, token: data.customer_token });
}

async function send(text) {
  const content = text.trim();
  if (!content) {
    input.focus();
    return;
  }
  showError('');
  sendButton.disabled = true;
  try {
    const fresh = !conversation;
    if (fresh) await openConversation();
    const res = await fetch(`/api/conversations/${encodeURIComponent(conversation.id)}/messages`, {
      method: 'POST',
      headers: authHeaders(),
      body: JSON.stringify({ content }),
    });
    if (!res.ok) throw new Error(await errorText(res));
    const { message_id: messageId } = await res.json();
    renderMessage({ message_id: messageId, role: 'customer', content, created_at: new Date().toISOString() });
    input.value = '';
    autosize();
    if (fresh || !events) listen();
  } catch (err) {
    showError(`Your message was not sent: ${err.message}. Please try again.`);
  } finally {
    sendButton.disabled = false;
    input.focus();
  }
}

/** After a reload: the stored conversation's messages, then live updates after the last one. */
async function resume() {
  conversation = loadConversation();
  if (!conversation) return;
  setStatus('Loading the conversation…');
  try {
    const res = await fetch(`/api/conversations/${encodeURIComponent(conversation.id)}/messages?limit=500`, {
      headers: authHeaders(),
    });
    if (res.status === 401 || res.status === 403 || res.status === 404) {
      // The conversation is gone or the token no longer matches: start a new one.
      saveConversation(null);
      setStatus('Books video meetings on Google Meet');
      return;
    }
    if (!res.ok) throw new Error(await errorText(res));
    const { messages } = await res.json();
    for (const m of messages) renderMessage(m);
    listen();
  } catch (err) {
    showError(`Could not load the conversation: ${err.message}.`);
  }
}

function startOver() {
  events?.close();
  events = null;
  clearTimeout(retryTimer);
  saveConversation(null);
  for (const item of [...list.querySelectorAll('li:not(#welcome)')]) item.remove();
  shown.clear();
  lastMessageId = null;
  lastRole = null;
  suggestions.hidden = false;
  newConversation.hidden = true;
  updateTyping();
  showError('');
  setStatus('Books video meetings on Google Meet');
  input.focus();
}

function autosize() {
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  if (!sendButton.disabled) send(input.value);
});
input.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
input.addEventListener('input', autosize);
for (const chip of suggestions.querySelectorAll('button')) {
  chip.addEventListener('click', () => send(chip.textContent));
}
newConversation.addEventListener('click', startOver);

resume().finally(() => input.focus());

// The page against a ring that requires a client token: without one it says so
// next to the token field, once (the ring refresh retries quietly); with it the
// ring renders, put, get, list and batch work, and a watch shows a write made
// elsewhere, resuming after a dropped stream from the last event's id.
// Usage: node token.mjs <base-url> <ids> <token>. It prints `ask put KEY VALUE`
// (KEY percent-encoded) for the test to write VALUE to KEY itself, with the token.
import { open, check } from './browser.mjs';

const [base, idList, token] = process.argv.slice(2);
const expected = idList.split(',').sort();
const key = 'secret/ü';
const path = '/keys/' + encodeURIComponent(key);
const { browser, page, errors } = await open(`${base}/`);
const focused = () => page.evaluate(() => document.activeElement && document.activeElement.id);
try {
  await page.waitForSelector('#token-msg[data-kind="missing"]');
  check((await page.textContent('#token-msg')).includes('requires a client token'),
    'without a token the page says the ring requires one');
  check(await focused() === 'token', 'and focuses the token field');
  check((await page.textContent('#ring-status')).includes('client token'), 'the ring status says why it is empty');
  check(await page.$('#ring .node') === null, 'and no node is drawn');

  // The periodic refresh goes on, refused, without taking the focus back.
  await page.focus('#key');
  for (let i = 0; i < 2; i++) {
    await page.waitForResponse((r) => r.url() === `${base}/ring` && r.status() === 401);
  }
  check(await focused() === 'key', 'refused ring refreshes retry quietly (the focus stays where it was)');

  await page.fill('#key', key);
  await page.fill('#value', 'guarded');
  await page.click('#put');
  await page.waitForSelector('#result[data-status="401"]');
  check(await focused() === 'token', 'a put without the token answers 401 and focuses the token field');

  await page.fill('#token', 'not the token');
  await page.press('#token', 'Enter');
  await page.waitForSelector('#token-msg[data-kind="refused"]');
  check(true, 'a wrong token is refused');
  if (process.env.SCREENSHOT) {
    await page.screenshot({ path: process.env.SCREENSHOT, clip: { x: 0, y: 0, width: 1280, height: 240 } });
  }

  await page.fill('#token', token);
  await page.click('#token-use');
  await page.waitForSelector('#token-msg', { state: 'hidden' });
  await page.waitForFunction((n) => document.querySelectorAll('#ring .node').length === n, expected.length);
  const shown = (await page.$$eval('#ring .node', (els) => els.map((e) => e.dataset.id))).sort();
  check(JSON.stringify(shown) === JSON.stringify(expected), `with the token the ring shows every node (${shown.length})`);
  const stored = await page.evaluate(() => [sessionStorage.getItem('crustyring.client-token'), localStorage.length]);
  check(stored[0] === token && stored[1] === 0, 'the token is kept in sessionStorage, not localStorage');

  await page.click('#put');
  await page.waitForSelector('#result[data-status="201"]');
  await page.fill('#value', '');
  await page.click('#get');
  await page.waitForSelector('#result[data-status="200"]');
  check((await page.textContent('#result')).includes('guarded'), 'put and get work with the token');

  await page.fill('#list-prefix', 'secret/');
  await page.click('#list');
  await page.waitForSelector(`#keys-list li[data-key="${key}"]`);
  check(true, 'the key list works with the token');
  await page.fill('#batch-ops', 'put secret/b 2\ndelete secret/b');
  await page.click('#batch-run');
  await page.waitForSelector('#batch-results[data-statuses="201,200"]');
  check(true, 'a batch works with the token');

  // The watch: its first stream (faked here) delivers the key's current state
  // and ends; the page reconnects with Last-Event-ID and the token, and the
  // node's stream then shows a write made through another node.
  const now = await (await fetch(base + path, { headers: { Authorization: `Bearer ${token}` } })).json();
  const watches = [];
  await page.route((url) => url.pathname === path && url.searchParams.get('watch') === 'true', (route) => {
    watches.push(route.request().headers());
    if (watches.length > 1) return route.continue();
    const data = JSON.stringify({ key, key_encoding: 'utf8', value: now.value, encoding: 'utf8', version: now.version, deleted: false });
    return route.fulfill({ status: 200, contentType: 'text/event-stream',
      body: `: keep-alive\r\nid: ${now.version}\r\nevent: put\r\ndata: ${data}\r\n\r\nevent: put\ndata: {"unfinished":` });
  });
  await page.evaluate(() => {
    const state = document.querySelector('#watch-state');
    window.watchStates = [];
    new MutationObserver(() => window.watchStates.push(state.textContent)).observe(state, { childList: true });
  });
  await page.click('#watch');
  await page.waitForSelector(`#watch-log li[data-version="${now.version}"]`);
  check(watches.length >= 1 && watches[0].authorization === `Bearer ${token}`, 'the watch sends the token');
  console.log(`ask put ${encodeURIComponent(key)} changed-elsewhere`);
  await page.waitForFunction(() => document.querySelector('#watch-log').textContent.includes('changed-elsewhere'));
  check(watches.length === 2 && watches[1]['last-event-id'] === now.version && watches[1].authorization === `Bearer ${token}`,
    'it reconnected once, with the last event\'s id and the token');
  const log = await page.$$eval('#watch-log li', (lis) => lis.map((li) => li.textContent));
  check(log.length === 2 && log[1].startsWith('guarded'),
    `the watch shows the change made elsewhere, resuming after the last event (${log.join(' | ')})`);
  const states = await page.evaluate(() => window.watchStates);
  check(states.some((s) => s.includes('reconnecting')) && await page.textContent('#watch-state') === '',
    `the watch said it was reconnecting, and no more once reconnected (${JSON.stringify(states)})`);
  await page.click('#unwatch');
  await page.unrouteAll();

  await page.click('#delete');
  await page.waitForSelector('#result[data-status="200"]');
  check(errors.length === 0, `no page errors (${errors.join('; ')})`);
} finally {
  await browser.close();
}

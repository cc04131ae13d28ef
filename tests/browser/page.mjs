// The web page: the ring picture shows every node; a key put through the form
// reads back; looking it up marks its owner. Usage: node page.mjs <base-url> <ids>
// where <ids> is a comma-separated list of the ring's node IDs (hex).
import { open, check } from './browser.mjs';

const [base, idList] = process.argv.slice(2);
const expected = idList.split(',').sort();
const { browser, page, errors } = await open(`${base}/`);
try {
  await page.waitForFunction((n) => document.querySelectorAll('#ring .node').length === n, expected.length);
  const shown = (await page.$$eval('#ring .node', (els) => els.map((e) => e.dataset.id))).sort();
  check(JSON.stringify(shown) === JSON.stringify(expected), `ring shows every node (${shown.length})`);
  await page.waitForSelector('#ring-balance[data-ratio]');
  const shownRatio = await page.$eval('#ring-balance', (e) => e.dataset.ratio);
  const ring = await page.evaluate(async () => (await fetch('/ring')).json());
  check(shownRatio === ring.largest_share_ratio.toFixed(2),
    `the page shows the largest share over the mean (${shownRatio})`);

  await page.fill('#key', 'browser key/ü');
  await page.fill('#value', 'hello from chromium');
  await page.click('#put');
  await page.waitForSelector('#result[data-status="201"]');
  check(true, 'put through the form answered 201');

  await page.fill('#value', '');
  await page.click('#get');
  await page.waitForSelector('#result[data-status="200"]');
  const text = await page.textContent('#result');
  check(text.includes('hello from chromium'), 'get through the form shows the value');

  const { owner, replicas } = await page.evaluate(async () => {
    const r = await (await fetch('/ring/owner/' + encodeURIComponent('browser key/ü'))).json();
    return { owner: r.owner.id, replicas: r.replicas.map((n) => n.id) };
  });
  await page.waitForSelector(`#ring .node.owner[data-id="${owner}"]`);
  const ownerAddr = await page.evaluate(async () =>
    (await (await fetch('/ring/owner/' + encodeURIComponent('browser key/ü'))).json()).owner.addr);
  const route = await page.$eval('#route', (e) => ({ hops: e.dataset.hops, owner: e.dataset.owner, text: e.textContent }));
  check(route.owner === ownerAddr && (route.hops === '0' || route.hops === '1'),
    `the page shows the last request's route (owner ${route.owner}, ${route.hops} forwards)`);
  check(/request [0-9a-f]{16}/.test(route.text), 'and its request ID');
  // Each node's request rate and latency come from its own /metrics: with
  // reads going on through this node, its rate shows above zero.
  await page.evaluate(() => { window.reads = setInterval(() => fetch('/keys/rate-probe'), 100); });
  await page.waitForFunction(() => [...document.querySelectorAll('#nodes td.rate[data-rate]')]
    .some((td) => Number(td.dataset.rate) > 0));
  await page.evaluate(() => clearInterval(window.reads));
  const rated = await page.$$eval('#nodes td.rate[data-rate]', (tds) => tds.length);
  check(rated === expected.length, `the node table shows every node's request rate (${rated})`);
  check(await page.$('#ring .keymark') !== null, 'the key is marked on the ring at its owner');
  await page.waitForFunction((ids) => ids.every((id) =>
    document.querySelector(`#nodes tr[data-id="${id}"] .replica-tag`)), replicas);
  check(replicas.length === Math.min(2, expected.length - 1),
    `the node table tags the key's ${replicas.length} replicas`);

  if (process.env.SCREENSHOT) {
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  }

  // The key list (GET /keys) shows the key; clicking it reads it.
  await page.fill('#list-prefix', 'browser');
  await page.click('#list');
  await page.waitForSelector('#keys-list li[data-key="browser key/ü"]');
  check(true, 'the key list shows the key put through the form');
  await page.click('#keys-list li[data-key="browser key/ü"]');
  await page.waitForSelector('#result[data-status="200"]');

  // A watch shows the key's changes as they happen (Server-Sent Events).
  await page.click('#watch');
  await page.waitForSelector('#watch-log li');
  await page.evaluate(async () => {
    await fetch('/keys/' + encodeURIComponent('browser key/ü'), { method: 'PUT', body: 'changed while watched' });
  });
  await page.waitForFunction(() => document.querySelector('#watch-log').textContent.includes('changed while watched'));
  check(true, 'the watch shows a change made elsewhere');
  await page.click('#unwatch');

  // A time to live from the form.
  await page.fill('#value', 'short-lived');
  await page.fill('#ttl', '1h');
  await page.click('#put');
  await page.waitForSelector('#result[data-status="200"]');
  check((await page.textContent('#result')).includes('expires in'), 'a put with a time to live says when it expires');
  await page.fill('#ttl', '');

  // The batch box: one POST /batch, each answer on its own line, in order.
  const batch = async (text, statuses) => {
    await page.fill('#batch-ops', text);
    await page.click('#batch-run');
    await page.waitForSelector(`#batch-results[data-statuses="${statuses}"]`);
    return page.$$eval('#batch-results li', (lis) => lis.map((li) => li.textContent));
  };
  let answers = await batch('put batch/a one\nput "batch/b c" "two words = fine" ttl=1h\n\nget batch/missing', '201,201,404');
  check(answers[2].includes('not found'), `a batch from lines answers each operation (${answers.join(' | ')})`);
  answers = await batch('get "batch/b c"\nput batch/a two if-absent\ndelete batch/a', '200,412,200');
  check(answers[0].includes('two words = fine') && answers[2].includes('was one'),
    `a batch reads, refuses a failed condition and deletes (${answers.join(' | ')})`);
  answers = await batch('{"ops": [{"op": "delete", "key": "batch/b c"}]}', '200');
  check(answers[0].includes('deleted'), 'a batch from a POST /batch body');
  await page.fill('#batch-ops', 'get a\nfly away');
  await page.click('#batch-run');
  await page.waitForFunction(() => document.querySelector('#result .detail')?.textContent.includes('line 2: `fly` is not an operation'));
  check(true, 'a bad line is named before anything is sent');

  await page.click('#delete');
  await page.waitForSelector('#result[data-status="200"]');
  await page.click('#get');
  await page.waitForSelector('#result[data-status="404"]');
  check(true, 'after delete, get answers 404');
  check(errors.length === 0, `no page errors (${errors.join('; ')})`);
} finally {
  await browser.close();
}

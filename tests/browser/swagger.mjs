// Swagger UI: every operation of the API renders, and "Try it out" on each works
// as written, with the documented examples. Usage: node swagger.mjs <base-url>
import { open, check } from './browser.mjs';

const [base] = process.argv.slice(2);
const { browser, page } = await open(`${base}/swagger-ui/`);
try {
  await page.waitForSelector('.opblock');
  const ops = await page.$$eval('.opblock', (els) => els.map((e) =>
    `${e.querySelector('.opblock-summary-method').textContent.trim()} ${e.querySelector('.opblock-summary-path').textContent.trim().replace(/\u200b/g, '')}`));
  for (const op of ['GET /keys/{key}', 'PUT /keys/{key}', 'DELETE /keys/{key}', 'GET /ring', 'GET /ring/owner/{key}', 'GET /healthz', 'GET /readyz']) {
    check(ops.includes(op), `Swagger UI renders ${op}`);
  }
  // "Try it out" with the documented examples, in an order that makes each
  // answer predictable: create key "1", read it, locate it, delete it.
  const plan = [
    ['PUT', '/keys/{key}', '201'],
    ['GET', '/keys/{key}', '200'],
    ['GET', '/ring/owner/{key}', '200'],
    ['GET', '/ring', '200'],
    ['DELETE', '/keys/{key}', '200'],
    ['GET', '/healthz', '200'],
    ['GET', '/readyz', '200'],
  ];
  for (const [method, path, expected] of plan) {
    const op = page.locator(`.opblock-${method.toLowerCase()}`, {
      has: page.locator('.opblock-summary-path', { hasText: new RegExp(`^${path.replace(/[{}/]/g, (c) => `\\${c}`)}$`) }),
    });
    await op.locator('.opblock-summary').click();
    await op.locator('button.try-out__btn').click();
    await op.locator('button.execute').click();
    const status = op.locator('.live-responses-table tbody .response-col_status').first();
    await status.waitFor();
    const code = (await status.textContent()).trim();
    check(code === expected, `Try it out on ${method} ${path} answers ${expected} (got ${code})`);
    await op.locator('.opblock-summary').click();
  }
} finally {
  await browser.close();
}

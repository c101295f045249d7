// A real browser for midge's WebSocket tests: Debian's chromium, headless, driven by
// playwright-core (no browser download), with a fresh profile per run.
//
//   node browser.mjs pubsub --page http://127.0.0.1:WS/pubsub.html --url ws://... [--spki HASH]
//   node browser.mjs status --page http://127.0.0.1:WS/status.html --mqtt mqtt://127.0.0.1:P
//        [--shot out.png] [--updates N: $SYS rounds to wait under load, default 2]
//
// pubsub: loads the test page (served by midge's http_dir) and prints what it saw.
// status: loads the status page, records its figures, publishes through a subscriber from
// Node until they move, takes a screenshot, and prints the figures before and after.
// --spki: the base64 SHA-256 of the wss server key, trusted with Chromium's
// --ignore-certificate-errors-spki-list (the browser trusts that one key, nothing else).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { chromium } from 'playwright-core';

const [mode, ...rest] = process.argv.slice(2);
const args = {};
for (let i = 0; i < rest.length; i += 2) args[rest[i].replace(/^--/, '')] = rest[i + 1];

const flags = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
if (args.spki) flags.push(`--ignore-certificate-errors-spki-list=${args.spki}`);

const profile = mkdtempSync(join(tmpdir(), 'midge-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: flags,
  viewport: { width: 1000, height: 560 },
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function pubsub(page) {
  const url = `${args.page}?url=${encodeURIComponent(args.url)}`;
  await page.goto(url);
  await page.waitForFunction(() => window.result !== undefined, null, { timeout: 25000 });
  return page.evaluate(() => window.result);
}

async function status(page) {
  await page.goto(args.page);
  const figures = () => page.evaluate(() => JSON.parse(JSON.stringify(window.midgeStatus)));
  await page.waitForFunction(() => window.midgeStatus.updates >= 2, null, { timeout: 15000 });
  const before = await figures();
  // Load: a publisher and a subscriber over plain MQTT, so that messages go in and out.
  const sub = await mqtt.connectAsync(args.mqtt, { reconnectPeriod: 0 });
  await sub.subscribeAsync('load/#', { qos: 0 });
  const pub = await mqtt.connectAsync(args.mqtt, { reconnectPeriod: 0 });
  let sent = 0;
  let after = before;
  const until = Date.now() + 30000;
  while (Date.now() < until) {
    for (let i = 0; i < 50; i++) pub.publish(`load/${i % 5}`, `m${sent++}`);
    await sleep(50);
    after = await figures();
    if (after.received > before.received && after.rateIn > 0 && after.rateOut > 0 &&
        after.updates >= before.updates + Number(args.updates ?? 2)) break;
  }
  if (args.shot) await page.screenshot({ path: args.shot });
  await pub.endAsync();
  await sub.endAsync();
  return { before, after, published: sent };
}

let result;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  result = mode === 'pubsub' ? await pubsub(page) : await status(page);
  if (errors.length) result.pageErrors = errors;
} catch (e) {
  result = { error: String(e?.stack ?? e) };
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(result.error ? 3 : 0);

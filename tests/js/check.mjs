// MQTT.js (Node) over WebSocket for midge's integration tests (tests/websocket.rs).
//
//   node check.mjs --url ws://127.0.0.1:PORT/mqtt [--ca ca.pem] --scenario NAME
//
// Scenarios as tests/py/ws_check.py: qos (QoS 0/1/2 and a 100 kB message to a QoS 2
// subscriber), retained, v5 (MQTT 5 properties), will (a client with a will is SIGKILLed).
// Prints one JSON object with what it saw; every wait is bounded.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const TIMEOUT = 8000;
const base = args.base ?? `ws/js-${Math.random().toString(16).slice(2, 10)}`;

function fail(why) {
  console.log(JSON.stringify({ error: String(why) }));
  process.exit(3);
}
setTimeout(() => fail('scenario timed out'), 4 * TIMEOUT).unref();

function connect(opts = {}) {
  const o = { reconnectPeriod: 0, connectTimeout: TIMEOUT, ...opts };
  if (args.ca) o.ca = readFileSync(args.ca);
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(args.url, o);
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

async function subscriber(topic, qos, opts) {
  const c = await connect(opts);
  const messages = [];
  c.on('message', (t, payload, packet) => messages.push({ t, payload, packet }));
  await c.subscribeAsync(topic, { qos });
  const wait = async (n) => {
    const until = Date.now() + TIMEOUT;
    while (messages.length < n && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    return messages.slice(0, n);
  };
  return { c, wait };
}

const scenarios = {
  async qos() {
    const sub = await subscriber(`${base}/#`, 2);
    const pub = await connect();
    const big = Buffer.from(Array.from({ length: 100000 }, (_, i) => i % 251));
    for (const q of [0, 1, 2]) await pub.publishAsync(`${base}/q${q}`, `q${q}`, { qos: q });
    await pub.publishAsync(`${base}/big`, big, { qos: 1 });
    const got = await sub.wait(4);
    await pub.endAsync();
    await sub.c.endAsync();
    return {
      received: got.map(({ t, payload, packet }) => [
        t.slice(base.length + 1),
        payload.length < 10 ? payload.toString() : payload.equals(big) ? 'big-ok' : 'big-bad',
        packet.qos,
      ]),
    };
  },
  async retained() {
    const pub = await connect();
    await pub.publishAsync(`${base}/r`, 'kept', { qos: 1, retain: true });
    const sub = await subscriber(`${base}/r`, 1);
    const got = await sub.wait(1);
    await pub.publishAsync(`${base}/r`, '', { qos: 1, retain: true });
    await pub.endAsync();
    await sub.c.endAsync();
    return { received: got.map(({ payload, packet }) => [payload.toString(), packet.qos, packet.retain]) };
  },
  async v5() {
    const sub = await subscriber(`${base}/p`, 1, { protocolVersion: 5 });
    const pub = await connect({ protocolVersion: 5 });
    await pub.publishAsync(`${base}/p`, 'props', {
      qos: 1,
      properties: {
        userProperties: { k: 'v' },
        contentType: 'text/plain',
        responseTopic: `${base}/resp`,
        correlationData: Buffer.from('cd'),
        messageExpiryInterval: 60,
      },
    });
    const got = await sub.wait(1);
    await pub.endAsync();
    await sub.c.endAsync();
    return {
      received: got.map(({ payload, packet }) => {
        const p = packet.properties ?? {};
        return {
          payload: payload.toString(),
          user: Object.entries(p.userProperties ?? {}),
          content_type: p.contentType ?? null,
          response_topic: p.responseTopic ?? null,
          correlation: p.correlationData ? p.correlationData.toString() : '',
          expiry: p.messageExpiryInterval ?? null,
        };
      }),
    };
  },
  async will() {
    const sub = await subscriber(`${base}/will`, 1);
    const childArgs = [fileURLToPath(import.meta.url), '--url', args.url, '--scenario', 'victim', '--base', base];
    if (args.ca) childArgs.push('--ca', args.ca);
    const victim = spawn(process.execPath, childArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve) => victim.stdout.once('data', resolve));
    victim.kill('SIGKILL'); // no DISCONNECT, no close frame: the kernel closes the socket
    const got = await sub.wait(1);
    await sub.c.endAsync();
    return { received: got.map(({ payload, packet }) => [payload.toString(), packet.qos]) };
  },
  async victim() {
    await connect({ clientId: `will-${process.pid}`, will: { topic: `${base}/will`, payload: 'gone', qos: 1 } });
    console.log('connected');
    await new Promise((r) => setTimeout(r, 60000));
  },
};

try {
  const result = await scenarios[args.scenario]();
  if (result) console.log(JSON.stringify(result));
  process.exit(0);
} catch (e) {
  fail(e?.stack ?? e);
}

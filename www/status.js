// midge's live status page: connects back to the broker that served it over MQTT over
// WebSocket, subscribes to $SYS/#, and shows the figures and small charts of the last
// minutes. Plain JavaScript; MQTT.js (mqtt.min.js) is served from the same http_dir.
//
// The page's URL may say where to connect (?url=ws://host:port/mqtt); by default it is the
// listener that served the page, at /mqtt. `window.midgeStatus` holds the latest figures
// (the browser test reads them).
(function () {
  'use strict';
  const HISTORY = 120; // points per chart
  const SYS = '$SYS/broker/';
  const status = (window.midgeStatus = {
    updates: 0, clients: null, subscriptions: null, retained: null, uptime: null,
    received: null, sent: null, rateIn: null, rateOut: null, shards: {},
  });
  const series = { clients: [], in: [], out: [] };
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (n == null ? '-' : Number.isInteger(n) ? n.toLocaleString('en') : n.toFixed(1));

  function uptimeText(s) {
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + (s % 60) + 's';
  }

  function spark(canvas, points) {
    const w = (canvas.width = canvas.clientWidth * devicePixelRatio);
    const h = (canvas.height = canvas.clientHeight * devicePixelRatio);
    const g = canvas.getContext('2d');
    g.clearRect(0, 0, w, h);
    if (points.length < 2) return;
    const max = Math.max(1, ...points);
    g.beginPath();
    const span = Math.max(points.length, 30) - 1; // few points: still a readable line
    points.forEach((v, i) => {
      const x = (i / span) * w, y = h - (v / max) * (h - 2) - 1;
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.strokeStyle = '#2f6fde';
    g.lineWidth = 1.5 * devicePixelRatio;
    g.stroke();
  }

  function push(name, v) {
    const s = series[name];
    s.push(v);
    if (s.length > HISTORY) s.shift();
  }

  // Counters become rates: the difference between two publications over the time between.
  let last = null;
  function rates(now) {
    if (status.received == null || status.sent == null) return;
    if (last && now > last.t) {
      const dt = (now - last.t) / 1000;
      status.rateIn = Math.max(0, (status.received - last.received) / dt);
      status.rateOut = Math.max(0, (status.sent - last.sent) / dt);
      push('in', status.rateIn);
      push('out', status.rateOut);
    }
    last = { t: now, received: status.received, sent: status.sent };
  }

  function render() {
    $('clients').textContent = fmt(status.clients);
    $('subscriptions').textContent = fmt(status.subscriptions);
    $('retained').textContent = fmt(status.retained);
    $('uptime').textContent = status.uptime == null ? '-' : uptimeText(status.uptime);
    $('rate-in').textContent = fmt(status.rateIn);
    $('rate-out').textContent = fmt(status.rateOut);
    spark($('chart-clients'), series.clients);
    spark($('chart-in'), series.in);
    spark($('chart-out'), series.out);
    const keys = Object.keys(status.shards).sort();
    if (keys.length) {
      $('shard-rows').replaceChildren(...keys.map((k) => {
        const tr = document.createElement('tr');
        for (const text of [k, status.shards[k]]) {
          const td = document.createElement('td');
          td.textContent = text;
          tr.append(td);
        }
        return tr;
      }));
    }
  }

  const params = new URLSearchParams(location.search);
  const url = params.get('url') ||
    (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/mqtt';
  const client = mqtt.connect(url, { reconnectPeriod: 2000, clientId: 'status-' + Math.random().toString(16).slice(2, 10) });
  client.on('connect', () => {
    $('state').textContent = 'live';
    $('state').className = 'up';
    client.subscribe('$SYS/#');
  });
  client.on('close', () => { $('state').textContent = 'disconnected'; $('state').className = ''; });

  // The whole tree comes every sys_interval; the uptime comes with each round, so a chart
  // point is added when it does.
  client.on('message', (topic, payload) => {
    const text = payload.toString();
    const n = Number(text.split(' ')[0]);
    const name = topic.startsWith(SYS) ? topic.slice(SYS.length) : topic;
    switch (name) {
      case 'clients/connected': status.clients = n; break;
      case 'subscriptions/count': status.subscriptions = n; break;
      case 'retained messages/count': status.retained = n; break;
      case 'publish/messages/received': status.received = n; break;
      case 'publish/messages/sent': status.sent = n; break;
      case 'version': $('version').textContent = text; break;
      case 'uptime':
        status.uptime = n;
        status.updates += 1;
        rates(Date.now());
        push('clients', status.clients ?? 0);
        break;
      default:
        if (name.startsWith('midge/')) status.shards[name.slice('midge/'.length)] = text;
    }
    render();
  });
})();

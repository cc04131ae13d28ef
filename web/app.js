'use strict';
// Crusty Ring web page: key form, result panel and a live picture of the ring.
(function () {
  const $ = (sel) => document.querySelector(sel);
  const SVGNS = 'http://www.w3.org/2000/svg';
  const TWO64 = 1n << 64n;
  const G = { cx: 260, cy: 235, r: 168 };
  const PALETTE = ['#5b4cdb', '#0ea5e9', '#10b981', '#f59e0b', '#ef4444', '#a855f7',
    '#14b8a6', '#ec4899', '#84cc16', '#f97316', '#3b82f6', '#64748b'];
  const REASONS = { 200: 'OK', 201: 'Created', 204: 'No Content', 400: 'Bad Request',
    401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict', 412: 'Precondition Failed', 413: 'Payload Too Large',
    422: 'Unprocessable Entity', 500: 'Internal Server Error', 502: 'Bad Gateway',
    503: 'Service Unavailable', 504: 'Gateway Timeout' };

  let nodes = [];          // last GET /ring answer, sorted by id
  let balance = null;      // { ratio, mean }: the ring's largest share over the mean, and the mean
  let located = null;      // { key, position, ownerId, ownerAddr }
  let drawnState = '';     // what the SVG currently shows, to skip needless redraws
  let ringInFlight = false;
  let traffic = {};        // node id -> { rate, latencyMs } from its /metrics, between two scrapes
  const scraped = {};      // node id -> { at, requests, seconds, count }: the last scrape
  let queue = Promise.resolve(); // key operations run one after another, in click order

  // ---------- helpers ----------
  function el(tag, attrs, ...kids) {
    const svg = ['svg', 'g', 'circle', 'path', 'line', 'text', 'tspan', 'title', 'polygon'].includes(tag);
    const e = svg ? document.createElementNS(SVGNS, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, v);
    for (const kid of kids.flat()) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  }
  const big = (hex) => BigInt('0x' + hex);
  // position on the ring in [0, 1), exact to double precision
  const frac = (v) => Number(v >> 11n) / 2 ** 53;
  function point(f, r) {
    const a = f * 2 * Math.PI;
    return [G.cx + r * Math.sin(a), G.cy - r * Math.cos(a)];
  }
  // clockwise distance start -> end; equal ends mean the whole ring
  function span(start, end) {
    const d = ((end - start) % TWO64 + TWO64) % TWO64;
    return d === 0n ? TWO64 : d;
  }
  function port(addr) {
    try { return new URL(addr).port || addr; } catch (_) { return (String(addr).match(/:(\d+)\/?$/) || [])[1] || addr; }
  }
  const short = (hex) => String(hex).slice(0, 6);
  const fmt = (n) => n.toFixed(2);

  // ---------- client token ----------
  // Nodes started with --client-token answer the key API only with
  // `Authorization: Bearer <token>`. The token is kept in sessionStorage, not
  // localStorage: it opens every key, so it lasts as long as this tab and is
  // not left behind on disk for whoever opens the page next.
  const TOKEN_KEY = 'crustyring.client-token';
  let token = '';
  try { token = sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { /* storage off: ask again */ }
  let refusal = null; // what #token-msg says: null, 'missing' or 'refused'
  const authorization = (t) => (t ? { Authorization: `Bearer ${t}` } : {});

  // Takes note of a key API answer to a request sent with token `sent`. A 401
  // says so next to the token field and focuses it: once for the periodic
  // refreshes (they go on quietly), every time for what the user asked.
  function tokenAnswer(status, sent, background) {
    if (sent !== token) return; // an answer to a token since replaced
    const msg = $('#token-msg');
    if (status !== 401) {
      if (refusal) {
        refusal = null;
        msg.hidden = true;
        delete msg.dataset.kind;
      }
      return;
    }
    const kind = token ? 'refused' : 'missing';
    if (refusal === kind && background) return;
    refusal = kind;
    msg.dataset.kind = kind;
    msg.textContent = kind === 'missing'
      ? 'This ring requires a client token: enter it here and press Use.'
      : 'The token was refused: check it and press Use.';
    msg.hidden = false;
    $('#token').focus();
    $('#token').select();
  }

  function useToken() {
    token = $('#token').value.trim();
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* kept for this page only */ }
    refusal = null;
    $('#token-msg').hidden = true;
    refreshRing();
    rewatch();
  }

  // ---------- HTTP ----------
  // `background`: a periodic refresh, not something the user asked for.
  async function api(method, path, body, background) {
    const sent = token;
    const opts = { method, headers: { Accept: 'application/json, application/problem+json', ...authorization(sent) } };
    if (body !== undefined) {
      opts.body = body;
      opts.headers['Content-Type'] = 'text/plain; charset=utf-8';
    }
    const res = await fetch(path, opts);
    tokenAnswer(res.status, sent, background);
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    const route = res.headers.get('x-crusty-hops') === null ? null : {
      hops: Number(res.headers.get('x-crusty-hops')),
      owner: res.headers.get('x-crusty-owner'),
      ownerId: res.headers.get('x-crusty-owner-id'),
      id: res.headers.get('x-request-id'),
    };
    return { status: res.status, ok: res.ok, reason: res.statusText || REASONS[res.status] || '', data, route };
  }

  // The route of the last key request: which node answered it from its store,
  // and how many times it was forwarded on the way.
  function showRoute(res) {
    const p = $('#route');
    if (!res.route) return;
    const r = res.route;
    p.hidden = false;
    p.dataset.hops = String(r.hops);
    p.dataset.owner = r.owner || '';
    const forwards = r.hops === 0 ? 'answered here (no forward)' : `${r.hops} forward${r.hops === 1 ? '' : 's'}`;
    p.replaceChildren('Route: ', el('code', {}, location.host), ' → owner ',
      el('code', {}, r.ownerId ? short(r.ownerId) : '?'), ` (${(r.owner || 'unknown').replace(/^https?:\/\//, '')}) · ${forwards}`,
      r.id ? el('span', { class: 'reqid' }, ` · request ${r.id}`) : null);
  }

  // ---------- per-node traffic, from each node's own /metrics ----------
  // Sums of every series of `name` in an OpenMetrics text.
  function metricSum(text, name) {
    let sum = 0;
    for (const line of text.split('\n')) {
      if (line.startsWith(name + '{') || line.startsWith(name + ' ')) {
        const v = Number(line.slice(line.lastIndexOf(' ') + 1));
        if (Number.isFinite(v)) sum += v;
      }
    }
    return sum;
  }
  async function scrape(n) {
    try {
      // /metrics is open: no token, which would also make every scrape of
      // another node a CORS preflight.
      const res = await fetch(String(n.addr).replace(/\/$/, '') + '/metrics');
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const text = await res.text();
      const now = { at: performance.now(), requests: metricSum(text, 'crustyring_requests_total'),
        seconds: metricSum(text, 'crustyring_request_duration_seconds_sum'),
        count: metricSum(text, 'crustyring_request_duration_seconds_count') };
      const last = scraped[n.id];
      scraped[n.id] = now;
      if (!last) return;
      const dt = (now.at - last.at) / 1000;
      const dn = now.count - last.count;
      traffic[n.id] = { rate: dt > 0 ? (now.requests - last.requests) / dt : 0,
        latencyMs: dn > 0 ? (now.seconds - last.seconds) / dn * 1000 : null };
    } catch (_) {
      // A node this browser cannot reach (another host's name): no figures.
      delete traffic[n.id];
    }
  }

  // ---------- result panel ----------
  const result = $('#result');
  function startRequest() {
    result.removeAttribute('data-status');
    result.classList.add('busy');
  }
  function showResult(method, path, res, extra) {
    const d = res.data;
    const isObj = d && typeof d === 'object';
    result.className = 'result ' + (res.ok ? 'ok' : 'err');
    const reason = (!res.ok && isObj && d.title) || res.reason;
    const parts = [el('div', { class: 'res-head' },
      el('span', { class: 'badge' }, `${res.status} ${reason}`.trim()),
      el('span', { class: 'req' }, `${method} ${path}`))];
    if (!res.ok) {
      parts.push(el('p', { class: 'res-summary' }, (isObj && d.title) || 'Request failed'));
      const detail = isObj ? d.detail : d;
      if (detail) parts.push(el('p', { class: 'detail' }, String(detail)));
    } else if (extra) {
      parts.push(...extra(d));
    }
    if (d !== null && d !== '') {
      const raw = typeof d === 'string' ? d : JSON.stringify(d, null, 2);
      parts.push(el('details', res.ok ? {} : { open: '' }, el('summary', {}, 'Response body'), el('pre', {}, raw)));
    }
    result.replaceChildren(...parts);
    result.dataset.status = String(res.status);
  }
  function showFailure(method, path, err) {
    result.className = 'result err';
    result.replaceChildren(
      el('div', { class: 'res-head' }, el('span', { class: 'badge' }, 'network error'),
        el('span', { class: 'req' }, `${method} ${path}`)),
      el('p', { class: 'detail' }, String(err && err.message || err)));
    result.dataset.status = '0';
  }
  function valueBlock(d) {
    if (!d || d.value === undefined) return [];
    const enc = d.encoding || 'utf8';
    const out = [el('div', { class: 'field' }, enc === 'base64' ? 'Value (base64: not valid UTF-8)' : 'Value'),
      el('pre', { class: 'value' }, String(d.value))];
    if (d.position) out.push(el('div', { class: 'pos' }, `position ${d.position}`));
    if (d.version) out.push(el('div', { class: 'pos' }, `version ${d.version}`));
    return out;
  }
  const summaries = {
    GET: (d) => [el('p', { class: 'res-summary' }, `Found key “${d.key}”`), ...valueBlock(d)],
    DELETE: (d) => [el('p', { class: 'res-summary' }, `Deleted key “${d.key}”`), ...valueBlock(d)],
    PUT: (d) => {
      const out = [el('p', { class: 'res-summary' }, d.created ? `Created key “${d.key}”` : `Replaced key “${d.key}”`)];
      if (d.previous) {
        const b64 = d.previous.encoding === 'base64';
        out.push(el('div', { class: 'field' }, b64 ? 'Previous value (base64)' : 'Previous value'),
          el('pre', { class: 'value' }, String(d.previous.value)));
      }
      if (d.position) out.push(el('div', { class: 'pos' }, `position ${d.position}`));
      if (d.version) out.push(el('div', { class: 'pos' }, `version ${d.version}`));
      if (d.ttl_ms) out.push(el('div', { class: 'pos' }, `expires in ${Math.round(d.ttl_ms / 1000)} s`));
      return out;
    },
  };

  // ---------- key operations ----------
  function keyOrComplain() {
    const key = $('#key').value;
    if (key) return key;
    result.className = 'result err';
    result.replaceChildren(el('p', { class: 'detail' }, 'Enter a key first.'));
    $('#key').focus();
    return null;
  }
  function enqueue(job) { queue = queue.then(job, job); return queue; }

  function keyOp(method) {
    const key = keyOrComplain();
    if (key === null) return;
    const body = method === 'PUT' ? $('#value').value : undefined;
    const ttl = $('#ttl').value.trim();
    enqueue(async () => {
      const path = '/keys/' + encodeURIComponent(key) + (method === 'PUT' && ttl ? '?ttl=' + encodeURIComponent(ttl) : '');
      startRequest();
      try {
        const res = await api(method, path, body);
        showResult(method, path, res, summaries[method]);
        showRoute(res);
      } catch (err) {
        showFailure(method, path, err);
      }
      if (method !== 'GET') refreshRing();
      await locate(key, false);
    });
  }

  function locateOnly() {
    const key = keyOrComplain();
    if (key === null) return;
    enqueue(() => locate(key, true));
  }

  // GET /ring/owner/{key}; marks the key on the ring. `show` also writes the answer to #result.
  async function locate(key, show) {
    const path = '/ring/owner/' + encodeURIComponent(key);
    const info = $('#locate-info');
    if (show) startRequest();
    let res;
    try {
      res = await api('GET', path);
    } catch (err) {
      if (show) showFailure('GET', path, err);
      return;
    }
    if (show) {
      showResult('GET', path, res, (d) => [
        el('p', { class: 'res-summary' }, `Key “${d.key}” belongs to node ${short(d.owner.id)}`),
        el('div', { class: 'pos' }, `position ${d.position} → owner ${d.owner.id} (${d.owner.addr})`)]);
    }
    info.hidden = false;
    if (!res.ok || !res.data || !res.data.owner) {
      info.className = 'locate-info err';
      info.textContent = `Could not locate “${key}”: ` + ((res.data && res.data.detail) || `HTTP ${res.status}`);
      return;
    }
    const d = res.data;
    located = { key: d.key, position: d.position, ownerId: d.owner.id, ownerAddr: d.owner.addr,
      replicaIds: (d.replicas || []).map((r) => r.id) };
    info.className = 'locate-info';
    info.replaceChildren('Key ', el('code', {}, `“${d.key}”`), ' at position ', el('code', {}, d.position),
      ' → owner ', el('code', {}, short(d.owner.id)), ` (${d.owner.addr})`);
    if (!nodes.some((n) => n.id === d.owner.id)) refreshRing();
    render();
  }

  // ---------- ring ----------
  async function refreshRing() {
    if (ringInFlight) return;
    ringInFlight = true;
    const status = $('#ring-status');
    try {
      const res = await api('GET', '/ring', undefined, true);
      if (res.status === 401) throw new Error(token ? 'the token was refused' : 'a client token is required');
      if (!res.ok || !res.data || !Array.isArray(res.data.nodes)) throw new Error(`HTTP ${res.status}`);
      nodes = res.data.nodes.slice().sort((a, b) => (big(a.id) < big(b.id) ? -1 : 1));
      balance = typeof res.data.largest_share_ratio === 'number'
        ? { ratio: res.data.largest_share_ratio, mean: res.data.mean_share } : null;
      status.className = 'ring-status live';
      status.textContent = `live · ${new Date().toLocaleTimeString()}`;
      await Promise.all(nodes.map(scrape));
      render();
    } catch (err) {
      status.className = 'ring-status down';
      status.textContent = `ring unavailable (${err.message})`;
    } finally {
      ringInFlight = false;
    }
  }

  function arcPath(startF, spanF, r) {
    if (spanF >= 0.99999) { // whole ring: two half circles
      const [x0, y0] = point(startF, r), [x1, y1] = point(startF + 0.5, r);
      return `M${x0} ${y0}A${r} ${r} 0 1 1 ${x1} ${y1}A${r} ${r} 0 1 1 ${x0} ${y0}`;
    }
    const [x0, y0] = point(startF, r), [x1, y1] = point(startF + spanF, r);
    return `M${x0} ${y0}A${r} ${r} 0 ${spanF > 0.5 ? 1 : 0} 1 ${x1} ${y1}`;
  }

  function nodeShare(n, i) {
    if (typeof n.share === 'number') return n.share;
    const next = n.arc ? n.arc.end : nodes[(i + 1) % nodes.length].id;
    return frac(span(big(n.arc ? n.arc.start : n.id), big(next)) - 1n) + 2 ** -64;
  }

  function render() {
    const state = JSON.stringify([nodes, located, balance, traffic]);
    if (state === drawnState) return;
    drawnState = state;
    const svg = $('#ring');
    const { cx, cy, r } = G;
    const layers = { arcs: el('g'), ticks: el('g'), key: el('g'), dots: el('g'), labels: el('g') };
    // quarter ticks
    const keyF = located ? frac(big(located.position)) : -1;
    ['0', '4', '8', 'c'].forEach((h, q) => {
      const near = Math.abs(keyF - q / 4) < 0.06 || (q === 0 && keyF > 0.94);
      const [x0, y0] = point(q / 4, r - 14), [x1, y1] = point(q / 4, r - 22), [tx, ty] = point(q / 4, r - (q % 2 ? 28 : 36));
      layers.ticks.append(el('line', { class: 'tick', x1: x0, y1: y0, x2: x1, y2: y1 }), near ? null :
        el('text', { class: 'ticklbl', x: tx, y: ty + 4, 'text-anchor': ['middle', 'end', 'middle', 'start'][q] }, `0x${h}0…`));
    });
    const ownerId = located && located.ownerId;
    let lastLabelF = -1, bump = false;
    nodes.forEach((n, i) => {
      const color = PALETTE[i % PALETTE.length];
      const id = big(n.id);
      const f = frac(id);
      const end = n.arc ? big(n.arc.end) : big(nodes[(i + 1) % nodes.length].id);
      const start = n.arc ? big(n.arc.start) : id;
      const isOwner = n.id === ownerId;
      const share = nodeShare(n, i);
      const tip = `${n.id}\n${n.addr}\n${n.state} · ${n.owned_keys ?? n.keys} owned, ${n.replica_keys ?? 0} replica keys · ${fmt(share * 100)}% of the ring`;
      layers.arcs.append(el('path', { class: 'arc' + (isOwner ? ' owner' : ''), stroke: color,
        d: arcPath(frac(start), nodes.length === 1 ? 1 : frac(span(start, end)), r) }, el('title', {}, tip)));
      const [x, y] = point(f, r);
      if (isOwner) layers.dots.append(el('circle', { class: 'halo', cx: x, cy: y, r: 16, stroke: color }));
      layers.dots.append(el('circle', { class: 'node' + (isOwner ? ' owner' : ''), 'data-id': n.id,
        'data-addr': n.addr, cx: x, cy: y, r: isOwner ? 10 : 8, fill: color }, el('title', {}, tip)));
      // labels outside the circle; crowded neighbours alternate between two radii
      bump = f - lastLabelF < 0.05 ? !bump : false;
      lastLabelF = f;
      const [lx, ly] = point(f, r + (bump ? 58 : 22));
      const sx = Math.sin(f * 2 * Math.PI), cy2 = Math.cos(f * 2 * Math.PI);
      const anchor = Math.abs(sx) < 0.3 ? 'middle' : sx > 0 ? 'start' : 'end';
      const y0 = ly + (cy2 > 0.5 ? -16 : cy2 < -0.5 ? 12 : -2);
      layers.labels.append(el('text', { class: 'lbl' + (isOwner ? ' owner' : ''), x: lx, y: y0, 'text-anchor': anchor },
        el('tspan', { class: 'id' }, short(n.id)), el('tspan', { class: 'port', x: lx, dy: 15 }, ':' + port(n.addr))));
    });
    if (located) {
      const f = frac(big(located.position));
      const [mx, my] = point(f, r);
      const [ix, iy] = point(f, r - 36);
      const [lx, ly] = point(f, r - 46);
      const sx = Math.sin(f * 2 * Math.PI), cf = Math.cos(f * 2 * Math.PI);
      const anchor = Math.abs(sx) < 0.35 ? 'middle' : sx > 0 ? 'end' : 'start';
      const ty = ly + (cf > 0.6 ? 12 : cf < -0.6 ? -14 : 0);
      // triangle whose tip touches the ring at the key's position, pointing outwards
      const tri = [point(f, r + 4), point(f - 0.012, r - 14), point(f + 0.012, r - 14)]
        .map(([px, py]) => `${px},${py}`).join(' ');
      const keyText = located.key.length > 18 ? located.key.slice(0, 17) + '…' : located.key;
      layers.key.append(
        el('line', { class: 'keyline', x1: mx, y1: my, x2: ix, y2: iy }),
        el('polygon', { class: 'keymark', points: tri }, el('title', {}, `key ${located.key} @ ${located.position}`)),
        el('text', { class: 'keylbl', x: lx, y: ty + 4, 'text-anchor': anchor }, keyText),
        el('text', { class: 'keypos', x: lx, y: ty + 18, 'text-anchor': anchor }, located.position.slice(0, 10) + '…'));
    }
    const center = nodes.length
      ? [el('text', { class: 'center-big', x: cx, y: cy + 4, 'text-anchor': 'middle' }, String(nodes.length)),
        el('text', { class: 'center-small', x: cx, y: cy + 24, 'text-anchor': 'middle' }, nodes.length === 1 ? 'node' : 'nodes')]
      : [el('text', { class: 'empty', x: cx, y: cy, 'text-anchor': 'middle' }, 'no nodes')];
    svg.replaceChildren(el('circle', { class: 'track', cx, cy, r }), layers.ticks, ...center,
      layers.arcs, layers.key, layers.dots, layers.labels);
    renderLegend(ownerId, (located && located.replicaIds) || []);
    renderBalance();
  }

  // How even the ring is: the largest share against the mean.
  function renderBalance() {
    const p = $('#ring-balance');
    if (!balance || !nodes.length) {
      p.replaceChildren();
      delete p.dataset.ratio;
      return;
    }
    const largest = Math.max(...nodes.map(nodeShare));
    p.dataset.ratio = balance.ratio.toFixed(2);
    p.replaceChildren('Largest share ', el('strong', {}, fmt(largest * 100) + '%'), ' = ',
      el('strong', {}, balance.ratio.toFixed(2) + '×'), ` the mean (${fmt(balance.mean * 100)}%)`);
  }

  function trafficCells(t) {
    if (!t) return [el('td', { class: 'num rate' }, '–'), el('td', { class: 'num latency' }, '–')];
    return [
      el('td', { class: 'num rate', 'data-rate': t.rate.toFixed(2), title: 'key requests answered per second (every interface)' }, t.rate.toFixed(1)),
      el('td', { class: 'num latency', title: 'mean time to answer, over the last refresh' },
        t.latencyMs === null ? '–' : t.latencyMs.toFixed(t.latencyMs < 10 ? 2 : 0))];
  }

  function renderLegend(ownerId, replicaIds) {
    const rows = nodes.map((n, i) => {
      const isOwner = n.id === ownerId;
      const isReplica = replicaIds.includes(n.id);
      const tag = isOwner ? el('span', { class: 'owner-tag' }, 'owner')
        : isReplica ? el('span', { class: 'owner-tag replica-tag' }, 'replica') : null;
      return el('tr', { 'data-id': n.id, class: isOwner ? 'owner' : null },
        el('td', {},
          el('span', { class: 'nid' }, el('span', { class: 'swatch', style: `background:${PALETTE[i % PALETTE.length]}` }),
            el('span', { class: 'hex' }, n.id), tag),
          el('span', { class: 'addr' }, String(n.addr).replace(/^https?:\/\//, ''))),
        el('td', {}, el('span', { class: 'pill ' + String(n.state).toLowerCase() }, String(n.state))),
        el('td', { class: 'num', title: 'live keys in the node\'s own arc' }, String(n.owned_keys ?? n.keys ?? '–')),
        el('td', { class: 'num', title: 'live keys held as a replica of the next nodes\' arcs' }, String(n.replica_keys ?? '–')),
        el('td', { class: 'num' }, fmt(nodeShare(n, i) * 100) + '%'),
        trafficCells(traffic[n.id]));
    });
    $('#nodes tbody').replaceChildren(...rows);
  }

  // ---------- watching ----------
  // A key's changes, read from `GET /keys/{key}?watch=true` (Server-Sent
  // Events) with fetch() rather than EventSource, which cannot send the
  // Authorization header. Like EventSource, it reconnects after an error or
  // the end of the stream, sending the last event's id as Last-Event-ID (the
  // node then resumes after that version), until unwatched.
  const RETRY_MS = 1000;
  const RETRY_MAX_MS = 15000;

  // An event stream parser, fed text in pieces (the WHATWG "event stream
  // interpretation"): lines end in CRLF, LF or CR; `field: value`; `:` starts
  // a comment (the node's keep-alives); a blank line dispatches the event.
  function eventParser(lastId, onEvent) {
    const p = { lastId, retry: null };
    let pending = '', data = [], type = '', id = lastId;
    function line(l) {
      if (l === '') {
        p.lastId = id;
        if (data.length) onEvent({ type: type || 'message', data: data.join('\n'), id });
        data = [];
        type = '';
        return;
      }
      if (l.startsWith(':')) return;
      const colon = l.indexOf(':');
      const field = colon < 0 ? l : l.slice(0, colon);
      let value = colon < 0 ? '' : l.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id' && !value.includes('\0')) id = value;
      else if (field === 'retry' && /^\d+$/.test(value)) p.retry = Number(value);
    }
    p.feed = (text) => {
      pending += text;
      // A CR at the end may be half of a CRLF: it waits for the next piece.
      const end = pending.endsWith('\r') ? pending.length - 1 : pending.length;
      const lines = pending.slice(0, end).split(/\r\n|\r|\n/);
      pending = lines.pop() + pending.slice(end);
      lines.forEach(line);
    };
    return p; // an event left unfinished when the stream ends is dropped
  }

  function pause(ms, signal) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done);
    });
  }

  // Reads the watch `w` ({ key, lastId, stop }) until w.stop aborts.
  async function follow(w, onEvent) {
    const url = '/keys/' + encodeURIComponent(w.key) + '?watch=true';
    const state = $('#watch-state');
    let delay = RETRY_MS;
    for (let attempt = 0; !w.stop.signal.aborted; attempt++) {
      const sent = token;
      const headers = { Accept: 'text/event-stream', ...authorization(sent) };
      if (w.lastId) headers['Last-Event-ID'] = w.lastId;
      let why;
      try {
        const res = await fetch(url, { headers, signal: w.stop.signal, cache: 'no-store' });
        tokenAnswer(res.status, sent, attempt > 0);
        const type = res.headers.get('content-type') || '';
        if (res.ok && type.startsWith('text/event-stream')) {
          state.textContent = '';
          delay = RETRY_MS;
          const parser = eventParser(w.lastId, onEvent);
          const reader = res.body.getReader();
          const decoder = new TextDecoder();
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            parser.feed(decoder.decode(value, { stream: true }));
            w.lastId = parser.lastId;
          }
          if (parser.retry !== null) delay = parser.retry;
          why = 'the stream ended';
        } else if (res.status === 401) {
          why = token ? 'the token was refused' : 'a client token is required';
        } else if (res.status >= 400 && res.status < 500) {
          // The node will not watch this key (a bad key, say): no use retrying.
          let detail = `HTTP ${res.status}`;
          try { detail = (await res.json()).detail || detail; } catch (_) { /* not a problem document */ }
          state.textContent = `not watched: ${detail}`;
          return;
        } else {
          why = `HTTP ${res.status}`;
        }
      } catch (err) {
        if (w.stop.signal.aborted) return;
        why = err.message || String(err);
      }
      if (w.stop.signal.aborted) return;
      state.textContent = `${why}; reconnecting…`;
      await pause(delay, w.stop.signal);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  function showChange(ev) {
    if (ev.type !== 'put' && ev.type !== 'delete') return;
    const d = JSON.parse(ev.data);
    const what = ev.type === 'delete' ? 'deleted' : (d.encoding === 'base64' ? `(base64) ${d.value}` : d.value);
    const li = el('li', { 'data-version': d.version }, el('span', {}, what), el('span', { class: 'pos' }, short(d.version.slice(0, 16))));
    const log = $('#watch-log');
    log.prepend(li);
    while (log.children.length > 20) log.lastChild.remove();
  }

  let watching = null; // the watched key: { key, lastId, stop: AbortController }
  function startWatch(key, lastId) {
    watching = { key, lastId, stop: new AbortController() };
    follow(watching, showChange);
  }
  function unwatch() {
    if (watching) watching.stop.abort();
    watching = null;
    $('#watch-box').hidden = true;
  }
  // Reconnects at once (with a new token), resuming after the last change shown.
  function rewatch() {
    if (!watching) return;
    const { key, lastId, stop } = watching;
    stop.abort();
    startWatch(key, lastId);
  }
  function watchKey() {
    const key = keyOrComplain();
    if (key === null) return;
    unwatch();
    $('#watch-log').replaceChildren();
    $('#watch-state').textContent = '';
    $('#watch-title').textContent = `Changes of “${key}”`;
    $('#watch-box').hidden = false;
    startWatch(key, '');
  }

  // ---------- listing ----------
  let listNext = null; // the cursor of the next page, if there is one
  async function listKeys(cursor) {
    const q = new URLSearchParams({ limit: '20' });
    const prefix = $('#list-prefix').value;
    if (prefix) q.set('prefix', prefix);
    if (cursor) q.set('cursor', cursor);
    const path = '/keys?' + q;
    let res;
    try {
      res = await api('GET', path);
    } catch (err) {
      showFailure('GET', path, err);
      return;
    }
    if (!res.ok || !res.data || !Array.isArray(res.data.keys)) {
      showResult('GET', path, res);
      return;
    }
    listNext = res.data.next || null;
    $('#list-next').disabled = listNext === null;
    const items = res.data.keys.map((k) => {
      const li = el('li', { 'data-key': k.key, title: `version ${k.version}` },
        el('span', {}, k.key_encoding === 'base64' ? `(base64) ${k.key}` : k.key),
        el('span', { class: 'pos' }, short(k.position)));
      if (k.key_encoding !== 'base64') {
        li.addEventListener('click', () => { $('#key').value = k.key; keyOp('GET'); });
      }
      return li;
    });
    if (items.length === 0) items.push(el('li', { class: 'empty' }, cursor ? 'no more keys' : 'no keys'));
    $('#keys-list').replaceChildren(...items);
  }

  // ---------- batch ----------
  // The batch box holds a POST /batch body, or operations one a line in
  // `crustyring batch`'s words: a word with spaces in double quotes (JSON
  // escapes), options after the key (and value).
  const BATCH_SYNTAX = 'get KEY | put KEY VALUE [ttl=30s] [if-match=VERSION] [if-absent] | delete KEY [if-match=VERSION]';
  function batchLine(line, n) {
    const words = (line.match(/"(?:[^"\\]|\\.)*"|\S+/g) || []).map((w) => {
      if (!w.startsWith('"')) return w;
      try { return JSON.parse(w); } catch (_) { throw new Error(`line ${n}: ${w} is not a well-quoted word`); }
    });
    const [op, key, ...rest] = words;
    if (!['get', 'put', 'delete'].includes(op)) throw new Error(`line ${n}: \`${op}\` is not an operation; write ${BATCH_SYNTAX}`);
    if (key === undefined) throw new Error(`line ${n}: \`${op}\` needs a key; write ${BATCH_SYNTAX}`);
    const out = { op, key };
    if (op === 'put') {
      if (!rest.length) throw new Error(`line ${n}: \`put\` needs a key and a value; write ${BATCH_SYNTAX}`);
      out.value = rest.shift();
    }
    for (const w of rest) {
      if (op === 'put' && w.startsWith('ttl=')) out.ttl = w.slice(4);
      else if (op !== 'get' && w.startsWith('if-match=')) out.if_match = w.slice(9);
      else if (op === 'put' && w === 'if-absent') out.if_absent = true;
      else throw new Error(`line ${n}: \`${w}\` is no option of ${op}; write ${BATCH_SYNTAX}`);
    }
    return out;
  }
  // The body to send, and the operations it holds (to label the answers).
  function batchBody(text) {
    if (text.trim().startsWith('{')) {
      let ops = [];
      try { ops = JSON.parse(text).ops || []; } catch (_) { /* the node says what is wrong */ }
      return { body: text, ops };
    }
    const ops = text.split('\n').map((line, i) => [line, i + 1]).filter(([line]) => line.trim())
      .map(([line, n]) => batchLine(line, n));
    if (!ops.length) throw new Error(`no operations; write one a line: ${BATCH_SYNTAX}`);
    return { body: JSON.stringify({ ops }), ops };
  }
  function batchOutcome(op, r) {
    const value = r.value === undefined ? '' : (r.encoding === 'base64' ? `(base64) ${r.value}` : r.value);
    if (r.status === 404) return 'not found';
    if (r.status >= 300) return `${r.status} ${REASONS[r.status] || ''}: ${r.detail || ''}`;
    if (op.op === 'get') return value;
    if (op.op === 'put') return r.status === 201 ? 'created' : `replaced (was ${value})`;
    return `deleted (was ${value})`;
  }
  function batchAnswers(ops) {
    return (d) => {
      const results = (d && d.results) || [];
      const failed = results.filter((r) => r.status >= 300).length;
      const items = results.map((r, i) => {
        const op = ops[i] || {};
        const key = op.key_encoding === 'base64' ? `(base64) ${op.key}` : op.key;
        return el('li', { class: r.status < 300 ? 'ok' : 'err', 'data-status': String(r.status),
          title: r.version ? `version ${r.version}` : null },
        el('span', {}, `${op.op || '?'} ${key === undefined ? '?' : key}`),
        el('span', { class: 'outcome' }, batchOutcome(op, r)));
      });
      return [el('p', { class: 'res-summary' }, `${results.length} operation${results.length === 1 ? '' : 's'}, ${failed} failed`),
        el('ul', { id: 'batch-results', class: 'keys-list batch-list',
          'data-statuses': results.map((r) => r.status).join(',') }, items)];
    };
  }
  function runBatch() {
    let batch;
    try {
      batch = batchBody($('#batch-ops').value);
    } catch (err) {
      result.className = 'result err';
      result.replaceChildren(el('p', { class: 'detail' }, err.message));
      $('#batch-ops').focus();
      return;
    }
    enqueue(async () => {
      startRequest();
      try {
        showResult('POST', '/batch', await api('POST', '/batch', batch.body), batchAnswers(batch.ops));
      } catch (err) {
        showFailure('POST', '/batch', err);
      }
      refreshRing();
    });
  }

  // ---------- wiring ----------
  $('#token').value = token;
  $('#token-form').addEventListener('submit', (e) => { e.preventDefault(); useToken(); });
  $('#batch-form').addEventListener('submit', (e) => { e.preventDefault(); runBatch(); });
  $('#batch-ops').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runBatch(); }
  });
  $('#watch').addEventListener('click', watchKey);
  $('#unwatch').addEventListener('click', unwatch);
  $('#list-form').addEventListener('submit', (e) => { e.preventDefault(); enqueue(() => listKeys(null)); });
  $('#list-next').addEventListener('click', () => { if (listNext) enqueue(() => listKeys(listNext)); });
  $('#put').addEventListener('click', () => keyOp('PUT'));
  $('#get').addEventListener('click', () => keyOp('GET'));
  $('#delete').addEventListener('click', () => keyOp('DELETE'));
  $('#locate').addEventListener('click', locateOnly);
  $('#kv-form').addEventListener('submit', (e) => e.preventDefault());
  $('#key').addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); keyOp('GET'); } });
  $('#value').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); keyOp('PUT'); }
  });
  refreshRing();
  setInterval(refreshRing, 2000);
})();

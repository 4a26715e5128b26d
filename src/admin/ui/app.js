// The status page: reads the admin API's JSON (the same views the API documents) every few
// seconds and renders it. Every value goes into the page as text (textContent / text nodes),
// never as HTML; the Content-Security-Policy allows only this script.

const params = new URLSearchParams(location.search);
const REFRESH_MS = Math.min(60_000, Math.max(500, Number(params.get('refresh')) * 1000 || 2000));
/** Rates and quantiles are computed over readings of the last WINDOW_MS. */
const WINDOW_MS = 30_000;
/** Rows shown per table before "n more: filter to narrow". */
const MAX_ROWS = 200;
/** Certificates change rarely: re-read this often (and at every config generation). */
const CERTS_EVERY_MS = 30_000;
const TOKEN_KEY = 'peregrine.adminToken';

const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) ?? '',
  api: new Set(),
  generation: undefined,
  routes: null,
  ratelimits: null,
  certs: null,
  certsAt: 0,
  /** Readings of /v1/stats/routes: { t, byRoute }. */
  samples: [],
  latencyBuckets: [],
  timer: undefined,
  ticks: 0,
};

class AuthError extends Error {}

/** An element with `props` set as properties and `children` (strings become text nodes). */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null) continue;
      if (k === 'data') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
      else el[k] = v;
    }
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const badge = (text, cls) => h('span', { className: `badge ${cls ?? text}` }, text);
const cell = (...children) => h('td', null, ...children);
const num = (...children) => h('td', { className: 'num' }, ...children);
const muted = (text) => h('span', { className: 'muted' }, text);

async function get(path) {
  const headers = state.token ? { authorization: `Bearer ${state.token}` } : {};
  const res = await fetch(path, { headers, cache: 'no-store' });
  if (res.status === 401 || res.status === 403) {
    const body = await res.json().catch(() => ({}));
    throw new AuthError(body.detail ?? `${res.status}`);
  }
  // An optional view this gateway does not have (no registry, no rate limits): nothing to show.
  if (res.status === 404) return null;
  // /readyz answers 503 with its reasons while not ready.
  if (!res.ok && !(path === '/readyz' && res.status === 503))
    throw new Error(`${path} answered ${res.status}`);
  return res.json();
}

const has = (path) => state.api.has(path);
const optional = (path) => (has(path) ? get(path) : Promise.resolve(null));

function ago(iso, now = Date.now()) {
  const s = (now - Date.parse(iso)) / 1000;
  return s < 0 ? `in ${span(-s)}` : `${span(s)} ago`;
}

function span(seconds) {
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172_800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86_400)} d`;
}

function ms(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '–';
  const v = seconds * 1000;
  return v < 10 ? `${v.toFixed(2)} ms` : v < 1000 ? `${v.toFixed(0)} ms` : `${(v / 1000).toFixed(2)} s`;
}

const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour12: false });

// ---------------------------------------------------------------- overview

function renderOverview(status, ready) {
  $('version').textContent = `v${status.version}`;
  const r = $('ready');
  r.textContent = status.draining ? 'draining' : status.ready ? 'ready' : 'not ready';
  r.className = `badge ${status.draining ? 'draining' : status.ready ? 'ok' : 'bad'}`;
  const c = status.config;
  const reasons = readinessReasons(ready, status);
  const auth = status.admin.auth;
  const facts = [
    ['Version', status.version],
    ['Uptime', span(status.uptimeSeconds)],
    ['Config generation', `${c.generation}${c.file ? ` · ${c.file}` : ''}`],
    ['Loaded', `${clock(c.loadedAt)} (${ago(c.loadedAt)})`],
    [
      'Last reload',
      c.lastReload.ok
        ? h('span', { className: 'ok' }, 'succeeded')
        : h(
            'span',
            { className: 'bad' },
            `failed ${ago(c.lastReload.at)} (${c.lastReload.trigger}); the last good config serves`,
          ),
    ],
    [
      'Readiness',
      reasons.length === 0
        ? h('span', { className: 'ok' }, 'ready')
        : h('span', { className: 'bad' }, reasons.join('; ')),
    ],
    ['Admin access', auth ? adminAccess(auth) : 'loopback only'],
  ];
  $('facts').replaceChildren(...facts.flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
  $('reload').replaceChildren(
    c.lastReload.ok
      ? ''
      : h(
          'ul',
          { className: 'issues', id: 'reload-issues' },
          c.lastReload.issues.map((i) => h('li', { className: 'mono' }, i.text)),
        ),
  );
}

function adminAccess(auth) {
  const parts = [];
  if (auth.bearer) parts.push('bearer token');
  if (auth.clientCertificates !== 'none') parts.push(`client certificates (${auth.clientCertificates})`);
  if (parts.length === 0) return 'no credential (loopback address)';
  return `${parts.join(' or ')}${auth.openProbes ? '; probes open' : ''}`;
}

function readinessReasons(ready, status) {
  if (!ready) return status.ready ? [] : ['not ready'];
  if (ready.ready) return [];
  const out = [];
  if (ready.draining) out.push('draining');
  for (const p of ready.authProvidersWithoutKeys ?? []) out.push(`auth provider ${p} has no keys`);
  for (const u of ready.upstreamSourcesPending ?? [])
    out.push(`upstream ${u}: endpoint source has not answered`);
  for (const u of ready.upstreamSourcesFailing ?? [])
    out.push(`upstream ${u}: endpoint source failing (last known endpoints serve)`);
  if (ready.registryStore && ready.registryStore.synced === false) out.push('registry store out of sync');
  if (out.length === 0) out.push('starting');
  return out;
}

function renderListeners(status, certs) {
  const byName = new Map((certs?.listeners ?? []).map((c) => [c.listener, c]));
  const rows = status.listeners.map((l) => {
    const c = byName.get(l.name);
    return h(
      'tr',
      { data: { listener: l.name } },
      cell(l.name),
      cell(h('code', null, l.address)),
      cell(l.tls ? 'yes' : 'no'),
      cell(c ? c.server.subject : '–'),
      cell(c ? expiry(c.server.notAfter) : '–'),
      cell(c ? c.clientAuth : '–'),
    );
  });
  // Listeners beside the data plane (registration API, admin) show their certificates too.
  for (const c of certs?.listeners ?? []) {
    if (status.listeners.some((l) => l.name === c.listener)) continue;
    rows.push(
      h(
        'tr',
        { data: { listener: c.listener } },
        cell(c.listener),
        cell('–'),
        cell('yes'),
        cell(c.server.subject),
        cell(expiry(c.server.notAfter)),
        cell(c.clientAuth),
      ),
    );
  }
  $('listeners').replaceChildren(...rows);
}

function expiry(notAfter) {
  const days = (Date.parse(notAfter) - Date.now()) / 86_400_000;
  const cls = days < 0 ? 'bad' : days < 14 ? 'warn' : 'ok';
  return h(
    'span',
    { className: cls, title: notAfter },
    days < 0
      ? `expired ${ago(notAfter)}`
      : `${new Date(notAfter).toISOString().slice(0, 10)} (${Math.floor(days)} days)`,
  );
}

// ---------------------------------------------------------------- routes

function addSample(stats) {
  const t = Date.parse(stats.at);
  const byRoute = new Map(stats.routes.map((r) => [r.route, r]));
  const last = state.samples.at(-1);
  // Counters only grow; anything else is another process (a restart): start over.
  if (last && [...byRoute.values()].some((r) => r.requests < (last.byRoute.get(r.route)?.requests ?? 0)))
    state.samples = [];
  state.samples.push({ t, byRoute });
  while (state.samples.length > 2 && t - state.samples[1].t >= WINDOW_MS) state.samples.shift();
  state.latencyBuckets = stats.latencyBuckets;
}

/** Rate, 5xx ratio and p99 of `route` between the oldest and newest reading. */
function windowed(route) {
  const first = state.samples[0];
  const last = state.samples.at(-1);
  if (!first || first === last) return null;
  const b = last.byRoute.get(route);
  if (!b) return { rate: 0, errors: null, p99: null };
  const a = first.byRoute.get(route);
  const seconds = (last.t - first.t) / 1000;
  const requests = b.requests - (a?.requests ?? 0);
  const errors = (b.statuses['5xx'] ?? 0) - (a?.statuses['5xx'] ?? 0);
  let p99 = null;
  if (b.latency) {
    const counts = b.latency.counts.map((c, i) => c - (a?.latency?.counts[i] ?? 0));
    p99 = quantile(0.99, state.latencyBuckets, counts);
  }
  return { rate: requests / seconds, errors: requests > 0 ? errors / requests : null, p99 };
}

/** As Prometheus' histogram_quantile: linear within the bucket the rank falls in. */
function quantile(q, bounds, cumulative) {
  const total = cumulative.at(-1);
  if (!total) return null;
  const rank = q * total;
  let i = cumulative.findIndex((c) => c >= rank);
  if (i >= bounds.length) return bounds.at(-1);
  if (i < 0) i = 0;
  const below = i === 0 ? 0 : cumulative[i - 1];
  const lower = i === 0 ? 0 : bounds[i - 1];
  const inBucket = cumulative[i] - below;
  return inBucket > 0 ? lower + (bounds[i] - lower) * ((rank - below) / inBucket) : bounds[i];
}

function matchText(m) {
  const parts = [];
  if (m.host) parts.push(m.host);
  parts.push(`${m.path ?? '/'}${m.pathType && m.pathType !== 'prefix' ? ` (${m.pathType})` : ''}`);
  if (m.methods?.length) parts.push(m.methods.join(','));
  if (m.headers) parts.push(...Object.keys(m.headers).map((k) => `[${k}]`));
  return parts.join(' ');
}

function renderRoutes() {
  const view = state.routes;
  if (!view) return;
  const filter = $('route-filter').value.trim().toLowerCase();
  const matching = view.routes.filter(
    (r) => !filter || r.name.toLowerCase().includes(filter) || r.upstream.toLowerCase().includes(filter),
  );
  const rows = matching.slice(0, MAX_ROWS).map((r) => {
    const w = windowed(r.name);
    const errCls = w?.errors > 0.05 ? 'bad' : w?.errors > 0 ? 'warn' : '';
    return h(
      'tr',
      { data: { route: r.name } },
      cell(r.name),
      cell(h('code', null, matchText(r.match))),
      cell(r.upstream),
      cell(policies(r)),
      num(w ? w.rate.toFixed(w.rate < 10 ? 2 : 0) : '–'),
      num(
        h('span', { className: errCls }, w?.errors === null || !w ? '–' : `${(w.errors * 100).toFixed(1)}%`),
      ),
      num(w ? ms(w.p99) : '–'),
    );
  });
  $('route-rows').replaceChildren(...rows);
  $('routes-more').textContent =
    matching.length > MAX_ROWS ? `${matching.length - MAX_ROWS} more routes: filter to narrow` : '';
  const first = state.samples[0];
  const last = state.samples.at(-1);
  $('window').textContent =
    first && last && first !== last ? span((last.t - first.t) / 1000) : '(waiting for a second reading)';
}

function policies(route) {
  const list = route.policies ?? [];
  if (list.length === 0) return muted('none');
  return list.map((p) =>
    h(
      'span',
      { className: 'chip', title: p.kind ?? '' },
      p.kind && p.kind !== p.name ? `${p.name} (${p.kind})` : (p.name ?? String(p)),
    ),
  );
}

/** Whatever /v1/ratelimits lists, one row per entry with its scalar fields. */
function renderRatelimits() {
  const view = state.ratelimits;
  const list = view ? (Array.isArray(view) ? view : (Object.values(view).find(Array.isArray) ?? [])) : [];
  $('ratelimits').hidden = list.length === 0;
  $('ratelimit-rows').replaceChildren(
    ...list.slice(0, MAX_ROWS).map((e) =>
      h(
        'tr',
        null,
        cell(e.name ?? e.policy ?? ''),
        cell(
          h(
            'code',
            null,
            Object.entries(e)
              .filter(([k, v]) => k !== 'name' && v !== null && typeof v !== 'object')
              .map(([k, v]) => `${k}=${v}`)
              .join('  '),
          ),
        ),
      ),
    ),
  );
}

// ---------------------------------------------------------------- upstreams

function renderUpstreams(view) {
  const cards = view.upstreams.slice(0, MAX_ROWS).map((u) => {
    const b = u.circuitBreaker;
    const facts = [
      `balancer ${u.balancer}`,
      `in flight ${u.inFlight}`,
      u.retryBudget ? `retry budget left ${u.retryBudget.remaining}` : 'no retry budget',
      u.bulkhead
        ? `bulkhead ${u.bulkhead.active}/${u.bulkhead.maxConcurrent}, queued ${u.bulkhead.queued}`
        : null,
      u.discovery ? `source ${u.discovery.source} ${u.discovery.target} (${u.discovery.state})` : null,
      u.panic ? 'PANIC: balancing over every endpoint' : null,
    ].filter(Boolean);
    return h(
      'div',
      { className: 'upstream', data: { upstream: u.name } },
      h(
        'h3',
        null,
        u.name,
        b ? h('span', { data: { breaker: u.name } }, 'breaker ', badge(b.state)) : muted('no breaker'),
        b?.lastTransition
          ? muted(
              `${b.lastTransition.from} → ${b.lastTransition.to} ${ago(b.lastTransition.at)}: ${b.lastTransition.reason}`,
            )
          : null,
        b?.state === 'open' ? muted(`probe in ${span(b.retryAfterMs / 1000)}`) : null,
      ),
      h(
        'div',
        { className: 'facts' },
        facts.map((f) => h('span', null, f)),
      ),
      u.discovery?.lastError
        ? h('p', { className: 'bad' }, `source error: ${u.discovery.lastError.detail}`)
        : null,
      endpointTable(u),
    );
  });
  $('upstream-list').replaceChildren(...(cards.length ? cards : [muted('no upstreams')]));
}

function endpointTable(u) {
  if (u.endpoints.length === 0) return muted('no endpoints');
  return h(
    'table',
    null,
    h(
      'thead',
      null,
      h(
        'tr',
        null,
        ['endpoint', 'source', 'state', 'in flight', 'EWMA', 'health check', 'ejections'].map((t) =>
          h('th', null, t),
        ),
      ),
    ),
    h(
      'tbody',
      null,
      u.endpoints
        .slice(0, MAX_ROWS)
        .map((e) =>
          h(
            'tr',
            { data: { endpoint: e.id, state: e.state } },
            cell(h('code', null, e.id), e.zone ? muted(` ${e.zone}`) : null),
            cell(e.source),
            cell(badge(e.state), e.eligible ? null : muted(' not eligible')),
            num(e.inFlight),
            num(`${e.ewmaMs.toFixed(1)} ms`),
            cell(health(e.health)),
            cell(
              e.ejection.count
                ? `${e.ejection.count}${e.ejection.until ? `, back ${ago(e.ejection.until)}` : ''}`
                : '0',
            ),
          ),
        ),
    ),
  );
}

function health(hc) {
  if (!hc) return muted('not checked');
  if (!hc.lastCheckAt) return muted('pending');
  const result = hc.lastError ?? (hc.lastStatus ? `HTTP ${hc.lastStatus}` : '');
  return h(
    'span',
    { className: hc.consecutiveFailures > 0 ? 'bad' : '' },
    `${result} ${ago(hc.lastCheckAt)}`,
  );
}

// ---------------------------------------------------------------- registry

function renderRegistry(registry, instances) {
  $('registry').hidden = !registry;
  if (!registry) return;
  const s = registry.store;
  $('registry-store').textContent =
    `store ${s.store}, ${s.synced ? 'in sync' : 'OUT OF SYNC'}${s.lastError ? `: ${s.lastError.message}` : ''}; ${registry.services.length} services; registration API ${registry.api ?? 'off'}`;
  const list = instances?.instances ?? [];
  $('instances').replaceChildren(
    ...list
      .slice(0, MAX_ROWS)
      .map((i) =>
        h(
          'tr',
          { data: { instance: `${i.service}/${i.id}` } },
          cell(i.service),
          cell(h('code', null, i.id)),
          cell(
            h(
              'code',
              null,
              `${i.protocol}://${i.address.includes(':') ? `[${i.address}]` : i.address}:${i.port}`,
            ),
          ),
          cell(badge(i.state)),
          cell(i.zone ?? '–'),
          cell(i.version ?? '–'),
          cell(ago(i.expiresAt)),
          cell(ago(i.lastHeartbeat)),
          cell(muted(i.registeredVia)),
        ),
      ),
  );
  const more = (instances?.total ?? 0) - Math.min(list.length, MAX_ROWS);
  $('instances-more').textContent =
    more > 0 ? `${more} more instances (GET /v1/registry/instances?service=…)` : '';
}

// ---------------------------------------------------------------- decisions

function renderDecisions(view) {
  const rows = view.decisions.map((d) =>
    h(
      'tr',
      { data: { code: d.code, traceId: d.traceId } },
      cell(clock(d.at), muted(` ${ago(d.at)}`)),
      num(d.status),
      cell(h('code', null, d.code)),
      cell(d.route ?? muted('no route')),
      cell(d.upstream ?? '–'),
      cell(traceLink(d, view.traceUrl)),
      cell(h('code', { className: 'muted' }, d.requestId)),
    ),
  );
  $('decision-rows').replaceChildren(
    ...(rows.length ? rows : [h('tr', null, h('td', { colSpan: 7, className: 'muted' }, 'none yet'))]),
  );
}

function traceLink(d, template) {
  if (!d.traceId) return '–';
  const id = h('code', null, d.traceId);
  // Trace ids are hex: nothing else can reach the URL.
  if (!template || !d.sampled || !/^[0-9a-f]{32}$/.test(d.traceId))
    return d.sampled
      ? id
      : h('span', { title: 'not sampled: the trace backend does not have it' }, id, muted(' (not sampled)'));
  const url = template.replaceAll('{traceId}', d.traceId);
  if (!/^https?:\/\//.test(url)) return id;
  return h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, id);
}

// ---------------------------------------------------------------- the loop

async function tick() {
  const status = await get('/v1/status');
  state.api = new Set(status.api);
  const generationChanged = status.config.generation !== state.generation;
  const certsDue = generationChanged || Date.now() - state.certsAt > CERTS_EVERY_MS;
  const [ready, upstreams, stats, decisions, registry, instances, routes, ratelimits, certs] =
    await Promise.all([
      get('/readyz'),
      get('/v1/upstreams'),
      get('/v1/stats/routes'),
      get('/v1/decisions/recent'),
      optional('/v1/registry'),
      optional('/v1/registry/instances'),
      generationChanged ? get('/v1/routes') : state.routes,
      generationChanged ? optional('/v1/ratelimits') : state.ratelimits,
      certsDue ? get('/v1/certs') : state.certs,
    ]);
  state.generation = status.config.generation;
  state.routes = routes;
  state.ratelimits = ratelimits;
  if (certsDue) {
    state.certs = certs;
    state.certsAt = Date.now();
  }
  addSample(stats);
  renderOverview(status, ready);
  renderListeners(status, state.certs);
  renderRoutes();
  renderRatelimits();
  renderUpstreams(upstreams);
  renderRegistry(registry, instances);
  renderDecisions(decisions);
}

async function loop() {
  clearTimeout(state.timer);
  try {
    await tick();
    state.ticks++;
    document.body.dataset.ticks = String(state.ticks);
    $('error').hidden = true;
    $('login').hidden = true;
    $('updated').textContent =
      `updated ${new Date().toLocaleTimeString([], { hour12: false })} · every ${REFRESH_MS / 1000} s`;
  } catch (err) {
    if (err instanceof AuthError) {
      $('login').hidden = false;
      $('login-error').textContent = state.token ? `refused: ${err.message}` : '';
      $('updated').textContent = 'credential required';
      return;
    }
    $('error').hidden = false;
    $('error').textContent =
      `The admin API did not answer (${err.message}); showing the last reading. Retrying.`;
    $('updated').textContent = 'stale';
  }
  if (!document.hidden) state.timer = setTimeout(loop, REFRESH_MS);
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  state.token = $('token').value.trim();
  // This tab only: gone when it closes.
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $('token').value = '';
  loop();
});
$('route-filter').addEventListener('input', renderRoutes);
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) loop();
});
loop();

// app.js: polls the control plane's traffic API every two seconds and draws
// the graph (graph.js) and the tables.
//
// When a poll fails (the API is unreachable, or answers an error) the page
// says so in #error and keeps what it last drew, with the time it was
// fetched; the next successful poll clears the message. The replica that
// serves the page answers for the whole mesh; when another replica did not
// answer, the API says the answer is partial and #partial says so, with
// body data-partial="true". The body's data attributes tell a test
// (test/browser) where the page is: data-status is loading, ok or error;
// data-updates counts successful polls and data-errors failed ones.
'use strict';

(() => {
  const POLL_MS = 2000;
  const TIMEOUT_MS = 5000;
  // A proxy's certificate is renewed at half its life, so one with less
  // than an hour left is late to renew (the shortest life is ten minutes,
  // the usual 24 hours).
  const CERT_WARN_MS = 60 * 60 * 1000;

  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const params = new URLSearchParams(location.search);
  const st = {
    namespace: params.get('namespace') || '',
    window: params.get('window') || '1m',
    namespaces: new Set(),
    lastOK: null,
    updates: 0,
    errors: 0,
    seq: 0,
    timer: 0,
  };

  // Relative to the page, so that it works under a proxy's path prefix.
  function apiURL(path, q) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v) u.set(k, v);
    const s = u.toString();
    return 'api/v1/' + path + (s ? '?' + s : '');
  }

  async function getJSON(url) {
    let resp;
    try {
      resp = await fetch(url, {cache: 'no-store', headers: {Accept: 'application/json'}, signal: AbortSignal.timeout(TIMEOUT_MS)});
    } catch (e) {
      throw new Error(`the control plane's API is unreachable (${url}: ${e.message})`);
    }
    if (!resp.ok) {
      let msg = resp.statusText;
      try {
        const j = await resp.json();
        if (j && j.error) msg = j.error;
      } catch (_) { /* not an ErrorResponse */ }
      throw new Error(`the control plane's API answered ${resp.status} to ${url}: ${msg}`);
    }
    try {
      return await resp.json();
    } catch (e) {
      throw new Error(`the control plane's API answered ${url} with something that is not JSON (${e.message})`);
    }
  }

  async function poll() {
    const seq = ++st.seq;
    clearTimeout(st.timer);
    const q = {namespace: st.namespace, window: st.window};
    try {
      const [edges, stat, proxies] = await Promise.all([
        getJSON(apiURL('edges', q)),
        getJSON(apiURL('stat', Object.assign({by: 'workload'}, q))),
        // Every namespace's proxies: they fill the namespace selector.
        getJSON(apiURL('proxies', {})),
      ]);
      if (seq !== st.seq) return; // the selection changed meanwhile
      draw(edges, stat, proxies || []);
      // Either answer may miss a replica; the message names it.
      const partial = [edges, stat].find(a => a && a.partial);
      $('partial').hidden = !partial;
      $('partial').textContent = partial ? (partial.message || 'Partial answer: a control plane replica did not answer.') : '';
      body.dataset.partial = partial ? 'true' : 'false';
      st.updates++;
      st.lastOK = new Date();
      body.dataset.updates = st.updates;
      body.dataset.status = 'ok';
      $('error').hidden = true;
      $('error').textContent = '';
      $('last-updated').textContent = `Last updated ${st.lastOK.toLocaleTimeString()} · window ${edges.window || st.window} · refreshed every ${POLL_MS / 1000} s`;
    } catch (e) {
      if (seq !== st.seq) return;
      st.errors++;
      body.dataset.errors = st.errors;
      body.dataset.status = 'error';
      const since = st.lastOK ? `Showing the data of ${st.lastOK.toLocaleTimeString()}` : 'Nothing to show yet';
      $('error').textContent = `Cannot refresh: ${e.message}. ${since}; retrying every ${POLL_MS / 1000} s.`;
      $('error').hidden = false;
      if (st.lastOK) $('last-updated').textContent = `Last updated ${st.lastOK.toLocaleTimeString()} (stale)`;
    } finally {
      if (seq === st.seq) st.timer = setTimeout(poll, POLL_MS);
    }
  }

  function draw(edgesResp, statResp, proxies) {
    const rows = statResp.rows || [];
    const apiEdges = edgesResp.edges || [];
    for (const p of proxies) st.namespaces.add(p.namespace);
    for (const r of rows) st.namespaces.add(r.namespace);
    for (const e of apiEdges) {
      if (e.source.namespace) st.namespaces.add(e.source.namespace);
      if (e.destination.namespace) st.namespaces.add(e.destination.namespace);
    }
    fillNamespaces();

    const g = Graph.build(apiEdges);
    const nodeStats = new Map(rows.filter(r => r.kind === 'workload').map(r => [r.namespace + '/' + r.name, r]));
    Graph.render($('graph'), g, nodeStats);
    $('graph-empty').hidden = g.edges.length > 0;
    drawEdges(apiEdges);
    drawWorkloads(rows);
    drawProxies(proxies.filter(p => !st.namespace || p.namespace === st.namespace));
  }

  function fillNamespaces() {
    const sel = $('namespace');
    const want = [...st.namespaces];
    if (st.namespace && !st.namespaces.has(st.namespace)) want.push(st.namespace);
    want.sort();
    const have = [...sel.options].slice(1).map(o => o.value);
    if (have.join('\n') !== want.join('\n')) {
      while (sel.options.length > 1) sel.remove(1);
      for (const ns of want) sel.add(new Option(ns, ns));
    }
    sel.value = st.namespace;
  }

  function cell(tr, text, cls, title) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    if (title) td.title = title;
    tr.appendChild(td);
    return td;
  }

  function replaceRows(table, rows, columns) {
    const tbody = $(table).tBodies[0];
    const fresh = document.createElement('tbody');
    if (rows.length === 0) {
      const tr = fresh.insertRow();
      const td = cell(tr, 'None in this window.', 'empty');
      td.colSpan = columns;
    }
    for (const r of rows) fresh.appendChild(r);
    tbody.replaceWith(fresh);
  }

  function lat(l, p) { return l ? Graph.fmtMs(l[p]) : '–'; }

  function drawEdges(apiEdges) {
    const key = (e) => Graph.sourceNode(e.source).key + ' ' + Graph.destinationNode(e.destination).key + ' ' +
      e.destination.service + ' ' + e.mtls;
    const sorted = apiEdges.slice().sort((a, b) => key(a) < key(b) ? -1 : (key(a) > key(b) ? 1 : 0));
    const rows = sorted.map(e => {
      const tr = document.createElement('tr');
      const from = Graph.sourceNode(e.source), to = Graph.destinationNode(e.destination);
      const src = from.kind === 'workload' ? from.key : from.name;
      const dst = to.kind === 'workload' ? to.key : to.name;
      const s = Graph.state(e.successRate);
      // The graph's node keys, as on its edges.
      tr.dataset.source = from.key;
      tr.dataset.destination = to.key;
      tr.dataset.state = s;
      tr.className = s;
      cell(tr, src, '', e.source.identity);
      cell(tr, dst, '', e.destination.identity);
      cell(tr, e.destination.service ? e.destination.namespace + '/' + e.destination.service : '–');
      cell(tr, e.mtls ? 'yes' : 'no');
      cell(tr, Graph.fmtRPS(e.rps), 'num');
      cell(tr, Graph.fmtRate(e.successRate), 'num rate');
      cell(tr, lat(e.latencyMs, 'p50'), 'num');
      cell(tr, lat(e.latencyMs, 'p95'), 'num');
      cell(tr, lat(e.latencyMs, 'p99'), 'num');
      cell(tr, String(e.tcpConnections || 0), 'num');
      return tr;
    });
    replaceRows('edges-table', rows, 10);
  }

  function drawWorkloads(statRows) {
    const rows = statRows.filter(r => r.kind === 'workload').map(r => {
      const tr = document.createElement('tr');
      const s = Graph.state(r.successRate);
      tr.dataset.workload = r.namespace + '/' + r.name;
      tr.dataset.state = s;
      tr.className = s;
      cell(tr, r.namespace);
      cell(tr, r.name, '', r.workloadKind);
      cell(tr, String(r.meshedPods), 'num');
      cell(tr, Graph.fmtRate(r.successRate), 'num rate');
      cell(tr, Graph.fmtRPS(r.rps), 'num');
      cell(tr, lat(r.latencyMs, 'p50'), 'num');
      cell(tr, lat(r.latencyMs, 'p95'), 'num');
      cell(tr, lat(r.latencyMs, 'p99'), 'num');
      cell(tr, String(r.tcpConnections || 0), 'num');
      return tr;
    });
    replaceRows('workloads-table', rows, 9);
  }

  function age(t, now) {
    const s = Math.round((now - t) / 1000);
    if (s < 0) return 'in the future (clock skew?)';
    if (s < 90) return s + ' s ago';
    if (s < 90 * 60) return Math.round(s / 60) + ' min ago';
    return Math.round(s / 3600) + ' h ago';
  }
  function until(t, now) {
    const m = Math.round((t - now) / 60000);
    if (m < 0) return 'expired ' + age(t, now);
    if (m < 90) return 'in ' + m + ' min';
    if (m < 48 * 60) return 'in ' + Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
    return 'in ' + Math.round(m / 1440) + ' days';
  }

  function drawProxies(proxies) {
    const now = Date.now();
    const sorted = proxies.slice().sort((a, b) => (a.namespace + '/' + a.pod).localeCompare(b.namespace + '/' + b.pod));
    const rows = sorted.map(p => {
      const tr = document.createElement('tr');
      tr.dataset.pod = p.namespace + '/' + p.pod;
      cell(tr, p.namespace);
      cell(tr, p.pod, '', p.identity);
      cell(tr, p.workload, '', p.workloadKind);
      cell(tr, p.version || '–');
      const exp = Date.parse(p.certNotAfter);
      const certState = exp <= now ? 'fail' : (exp - now < CERT_WARN_MS ? 'warn' : 'ok');
      const td = cell(tr, until(exp, now), 'cert ' + certState, new Date(exp).toISOString());
      td.dataset.state = certState;
      cell(tr, p.lastConfigAt ? age(Date.parse(p.lastConfigAt), now) : 'never', '', p.lastConfigAt || 'no discovery answer yet');
      cell(tr, age(Date.parse(p.lastReportAt), now), '', p.lastReportAt);
      cell(tr, p.connected ? 'yes' : 'no', p.connected ? '' : 'warn');
      cell(tr, String(p.droppedReports || 0), 'num');
      return tr;
    });
    replaceRows('proxies-table', rows, 9);
  }

  function select() {
    st.namespace = $('namespace').value;
    st.window = $('window').value;
    const u = new URLSearchParams();
    if (st.namespace) u.set('namespace', st.namespace);
    if (st.window !== '1m') u.set('window', st.window);
    history.replaceState(null, '', u.toString() ? '?' + u : location.pathname);
    body.dataset.status = 'loading';
    poll();
  }

  const win = $('window');
  if (![...win.options].some(o => o.value === st.window)) win.add(new Option(st.window, st.window));
  win.value = st.window;
  fillNamespaces();
  $('namespace').addEventListener('change', select);
  win.addEventListener('change', select);
  poll();
})();

// graph.js: the service graph, from the edges API's answer to an SVG.
//
// Layout is a pure function of the graph: the same nodes and edges give the
// same picture on every refresh, so nodes do not jump while traffic goes on.
// Columns are call depth (left to right: a caller left of what it calls,
// by the longest call chain from a workload nobody calls); rows are grouped
// in one horizontal lane per namespace; within a lane and column nodes are
// sorted by name. A node moves only when the call structure changes.
//
// Colours (dashboard.OKSuccessRate and WarnSuccessRate in Go): an edge is
// ok (green) at a success rate of 99% or more, warn (amber) at 95% or more,
// fail (red) below; none (grey) without requests (opaque TCP only). The
// width grows with the logarithm of requests per second, relative to the
// busiest edge shown.
'use strict';

const Graph = (() => {
  const OK_RATE = 0.99;
  const WARN_RATE = 0.95;

  const NODE_W = 184;
  const NODE_H = 46;
  const GAP_X = 210; // room for an edge's label between columns
  const GAP_Y = 34;
  const LANE_PAD = 26; // above the first row: the namespace's name
  const MARGIN = 20;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  function state(successRate) {
    if (successRate === undefined || successRate === null) return 'none';
    if (successRate >= OK_RATE) return 'ok';
    if (successRate >= WARN_RATE) return 'warn';
    return 'fail';
  }

  // The node of each side of an edge. A caller outside the mesh has no
  // workload; a callee the control plane does not know is named by the
  // Service that was called, if any.
  function sourceNode(s) {
    if (s.workload) return {key: s.namespace + '/' + s.workload, namespace: s.namespace, name: s.workload, kind: 'workload'};
    return {key: 'unmeshed:' + (s.namespace || ''), namespace: s.namespace || '', name: 'outside the mesh', kind: 'unmeshed'};
  }
  function destinationNode(d) {
    if (d.workload) return {key: d.namespace + '/' + d.workload, namespace: d.namespace, name: d.workload, kind: 'workload'};
    if (d.service) return {key: 'service:' + d.namespace + '/' + d.service, namespace: d.namespace, name: d.service + ' (service)', kind: 'service'};
    return {key: 'unknown:' + (d.namespace || ''), namespace: d.namespace || '', name: 'unknown destination', kind: 'unknown'};
  }

  // build merges the API's edges into one edge per source and destination
  // node: the API splits a pair's traffic by mTLS and by Service. Requests
  // and rates add up; the success rate is weighted by requests; each
  // latency percentile is the highest of the parts (an upper bound: the
  // histograms are not in the answer).
  function build(apiEdges) {
    const nodes = new Map();
    const edges = new Map();
    for (const e of apiEdges || []) {
      const from = sourceNode(e.source);
      const to = destinationNode(e.destination);
      if (!nodes.has(from.key)) nodes.set(from.key, from);
      if (!nodes.has(to.key)) nodes.set(to.key, to);
      const key = from.key + ' -> ' + to.key;
      let m = edges.get(key);
      if (!m) {
        m = {key, from: from.key, to: to.key, requests: 0, rps: 0, succeeded: 0, latency: null,
          tcpConnections: 0, mtlsRequests: 0, plainRequests: 0, mtlsParts: 0, plainParts: 0};
        edges.set(key, m);
      }
      m.requests += e.requests;
      m.rps += e.rps;
      m.tcpConnections += e.tcpConnections || 0;
      if (e.successRate !== undefined && e.successRate !== null) m.succeeded += e.successRate * e.requests;
      if (e.latencyMs) {
        m.latency = m.latency ? {
          p50: Math.max(m.latency.p50, e.latencyMs.p50),
          p95: Math.max(m.latency.p95, e.latencyMs.p95),
          p99: Math.max(m.latency.p99, e.latencyMs.p99),
        } : Object.assign({}, e.latencyMs);
      }
      if (e.mtls) m.mtlsParts++; else m.plainParts++;
    }
    for (const m of edges.values()) {
      m.successRate = m.requests > 0 ? m.succeeded / m.requests : null;
      m.state = state(m.successRate);
      m.mtls = m.plainParts === 0 ? 'yes' : (m.mtlsParts === 0 ? 'no' : 'partly');
    }
    return {nodes, edges: [...edges.values()].sort((a, b) => cmp(a.key, b.key))};
  }

  function cmp(a, b) { return a < b ? -1 : (a > b ? 1 : 0); }

  // columns gives each node its call depth: the longest chain of calls
  // that reaches it from a node nobody calls. Calls that close a cycle
  // (found by a depth-first walk in name order, so always the same ones)
  // are left out of the depth; they are drawn as back edges.
  function columns(nodes, edges) {
    const keys = [...nodes.keys()].sort(cmp);
    const out = new Map(keys.map(k => [k, []]));
    const indeg = new Map(keys.map(k => [k, 0]));
    for (const e of edges) {
      out.get(e.from).push(e.to);
      if (e.from !== e.to) indeg.set(e.to, indeg.get(e.to) + 1);
    }
    for (const list of out.values()) list.sort(cmp);
    const colour = new Map(); // 1 on the walk's stack, 2 done
    const order = []; // post-order
    const back = new Set();
    const visit = (root) => {
      // Iterative, so that a long chain does not overflow the stack.
      const stack = [[root, 0]];
      colour.set(root, 1);
      while (stack.length) {
        const top = stack[stack.length - 1];
        const [v, i] = top;
        const next = out.get(v);
        if (i < next.length) {
          top[1]++;
          const w = next[i];
          const c = colour.get(w);
          if (c === 1) back.add(v + ' -> ' + w);
          else if (!c) { colour.set(w, 1); stack.push([w, 0]); }
        } else {
          colour.set(v, 2);
          order.push(v);
          stack.pop();
        }
      }
    };
    for (const k of keys) if (indeg.get(k) === 0 && !colour.get(k)) visit(k);
    for (const k of keys) if (!colour.get(k)) visit(k);
    const depth = new Map(keys.map(k => [k, 0]));
    for (let i = order.length - 1; i >= 0; i--) {
      const v = order[i];
      for (const w of out.get(v)) {
        if (back.has(v + ' -> ' + w)) continue;
        depth.set(w, Math.max(depth.get(w), depth.get(v) + 1));
      }
    }
    return {depth, back};
  }

  // layout places the nodes: x by column, y by namespace lane, then by
  // name within the lane's column.
  function layout(g) {
    const {depth, back} = columns(g.nodes, g.edges);
    const lanesByName = new Map();
    for (const n of g.nodes.values()) {
      if (!lanesByName.has(n.namespace)) lanesByName.set(n.namespace, []);
      lanesByName.get(n.namespace).push(n);
    }
    const laneNames = [...lanesByName.keys()].sort(cmp);
    let ncols = 1;
    for (const d of depth.values()) ncols = Math.max(ncols, d + 1);
    const pos = new Map();
    const lanes = [];
    let y = MARGIN;
    for (const ns of laneNames) {
      const members = lanesByName.get(ns).sort((a, b) => cmp(a.name, b.name) || cmp(a.key, b.key));
      const rows = new Map();
      let height = 1;
      for (const n of members) {
        const col = depth.get(n.key);
        const row = rows.get(col) || 0;
        rows.set(col, row + 1);
        height = Math.max(height, row + 1);
        pos.set(n.key, {x: MARGIN + col * (NODE_W + GAP_X), y: y + LANE_PAD + row * (NODE_H + GAP_Y), col});
      }
      const h = LANE_PAD + height * (NODE_H + GAP_Y);
      lanes.push({namespace: ns, y, height: h});
      y += h + 10;
    }
    const width = 2 * MARGIN + ncols * NODE_W + (ncols - 1) * GAP_X;
    return {pos, lanes, back, width, height: y + MARGIN};
  }

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Formatting shared with the tables (app.js).
  function fmtRPS(r) {
    if (r === 0) return '0';
    if (r < 0.1) return r.toFixed(3);
    if (r < 10) return r.toFixed(2);
    if (r < 1000) return r.toFixed(1);
    return Math.round(r).toString();
  }
  function fmtRate(s) {
    if (s === undefined || s === null) return '–';
    if (s >= 1) return '100%';
    if (s >= 0.99) return (Math.floor(s * 10000 + 1e-6) / 100).toFixed(2) + '%';
    return (Math.floor(s * 1000 + 1e-6) / 10).toFixed(1) + '%';
  }
  function fmtMs(ms) {
    if (ms === undefined || ms === null) return '–';
    if (ms >= 1000) return (ms / 1000).toFixed(2) + ' s';
    if (ms >= 100) return Math.round(ms) + ' ms';
    if (ms >= 10) return ms.toFixed(1) + ' ms';
    return ms.toFixed(2) + ' ms';
  }

  function edgeLabel(e) {
    const parts = [fmtRPS(e.rps) + ' rps'];
    if (e.requests > 0) {
      parts.push(fmtRate(e.successRate));
      if (e.latency) parts.push('p99 ' + fmtMs(e.latency.p99));
    } else {
      parts.push(e.tcpConnections + ' TCP conn');
    }
    return parts.join(' · ');
  }

  // geometry is an edge's path and the point its label sits on. A call to
  // a later column leaves the caller's right side and enters the callee's
  // left side; any other (same column, or back) loops below both nodes, so
  // that A→B and B→A never share a line.
  function geometry(a, b, self) {
    if (self) {
      const x = a.x + NODE_W, y = a.y + NODE_H * 0.7, x2 = a.x + NODE_W * 0.8, y2 = a.y + NODE_H;
      return {d: `M ${x} ${y} C ${x + 55} ${y}, ${x2} ${y2 + 55}, ${x2} ${y2 + 3}`, lx: x + 30, ly: y2 + 36};
    }
    if (b.col > a.col) {
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x - 4, y2 = b.y + NODE_H / 2;
      const dx = (x2 - x1) / 2;
      // A call that skips columns bows upwards, over the nodes between,
      // by more the more it skips (a cubic's middle reaches 3/4 of its
      // control points' lift).
      const lift = Math.min((b.col - a.col - 1) * (NODE_H + GAP_Y) * 0.8, (Math.min(y1, y2) - 24) / 0.75);
      return {d: `M ${x1} ${y1} C ${x1 + dx} ${y1 - lift}, ${x2 - dx} ${y2 - lift}, ${x2} ${y2}`,
        lx: (x1 + x2) / 2, ly: (y1 + y2) / 2 - lift * 0.75 - 6};
    }
    const x1 = a.x + NODE_W / 2 - 12, y1 = a.y + NODE_H, x2 = b.x + NODE_W / 2 + 12, y2 = b.y + NODE_H + 4;
    const drop = Math.max(y1, y2) + 40 + Math.abs(x1 - x2) / 8;
    return {d: `M ${x1} ${y1} C ${x1} ${drop}, ${x2} ${drop}, ${x2} ${y2}`, lx: (x1 + x2) / 2, ly: 0.25 * (y1 + y2) / 2 + 0.75 * drop};
  }

  // render draws g into svg (replacing what was there). nodeStats maps a
  // node key to the workload's own stat row (what its proxies served), for
  // the node's second line.
  function render(svg, g, nodeStats) {
    const L = layout(g);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.dataset.nodes = g.nodes.size;
    svg.dataset.edges = g.edges.length;

    const desc = el('desc', {id: 'graph-desc'}, g.edges.length === 0 ? 'No traffic yet.' :
      g.edges.map(e => `${nodeName(g, e.from)} calls ${nodeName(g, e.to)}: ${edgeLabel(e)}`).join('; ') + '.');
    svg.appendChild(desc);

    const defs = el('defs');
    for (const s of ['ok', 'warn', 'fail', 'none']) {
      const m = el('marker', {id: 'arrow-' + s, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9,
        markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse', class: 'arrow ' + s});
      m.appendChild(el('path', {d: 'M 0 0 L 10 5 L 0 10 z'}));
      defs.appendChild(m);
    }
    svg.appendChild(defs);

    const lanes = el('g', {class: 'lanes'});
    for (const lane of L.lanes) {
      const lg = el('g', {class: 'lane', 'data-namespace': lane.namespace});
      lg.appendChild(el('rect', {x: 4, y: lane.y, width: L.width - 8, height: lane.height, rx: 8}));
      lg.appendChild(el('text', {x: 14, y: lane.y + 17, class: 'lane-label'}, lane.namespace ? 'namespace ' + lane.namespace : 'no namespace'));
      lanes.appendChild(lg);
    }
    svg.appendChild(lanes);

    let maxRPS = 0;
    for (const e of g.edges) maxRPS = Math.max(maxRPS, e.rps);
    const edges = el('g', {class: 'edges'});
    const labels = el('g', {class: 'edge-labels'});
    for (const e of g.edges) {
      const a = L.pos.get(e.from), b = L.pos.get(e.to);
      const geo = geometry(a, b, e.from === e.to);
      const width = maxRPS > 0 ? 1.5 + 4.5 * Math.log1p(e.rps) / Math.log1p(maxRPS) : 1.5;
      const attrs = {
        class: 'edge ' + e.state, 'data-source': e.from, 'data-destination': e.to, 'data-state': e.state,
        'data-rps': e.rps, 'data-requests': e.requests, 'data-mtls': e.mtls,
      };
      if (e.successRate !== null) attrs['data-success-rate'] = e.successRate;
      if (e.latency) attrs['data-p99-ms'] = e.latency.p99;
      const eg = el('g', attrs);
      eg.appendChild(el('title', {}, `${nodeName(g, e.from)} → ${nodeName(g, e.to)}: ${edgeLabel(e)}` +
        (e.latency ? ` (p50 ${fmtMs(e.latency.p50)}, p95 ${fmtMs(e.latency.p95)})` : '') + `, mTLS ${e.mtls}`));
      eg.appendChild(el('path', {d: geo.d, 'stroke-width': width.toFixed(2), 'marker-end': `url(#arrow-${e.state})`}));
      edges.appendChild(eg);
      const text = edgeLabel(e);
      const lg = el('g', {class: 'edge-label ' + e.state, 'data-source': e.from, 'data-destination': e.to});
      // The rect's width is set once the text is in the page and can be
      // measured (below).
      lg.appendChild(el('rect', {x: geo.lx, y: geo.ly - 12, width: 0, height: 17, rx: 4}));
      lg.appendChild(el('text', {x: geo.lx, y: geo.ly + 1, 'text-anchor': 'middle'}, text));
      labels.appendChild(lg);
    }
    svg.appendChild(edges);

    const nodes = el('g', {class: 'nodes'});
    for (const key of [...g.nodes.keys()].sort(cmp)) {
      const n = g.nodes.get(key), p = L.pos.get(key);
      const st = nodeStats.get(key);
      const ns = st ? state(st.successRate) : 'none';
      const ng = el('g', {class: 'node ' + n.kind + ' ' + ns, 'data-node': key, 'data-namespace': n.namespace,
        'data-name': n.name, 'data-kind': n.kind, 'data-state': ns, transform: `translate(${p.x} ${p.y})`});
      ng.appendChild(el('title', {}, `${n.kind === 'workload' ? 'workload ' + key : n.name}` +
        (st ? `: served ${fmtRPS(st.rps)} rps, ${fmtRate(st.successRate)} success, ${st.meshedPods} meshed pods` : '')));
      ng.appendChild(el('rect', {width: NODE_W, height: NODE_H, rx: 6}));
      ng.appendChild(el('text', {x: 10, y: 19, class: 'node-name'}, clip(n.name, 24)));
      const sub = st ? `${fmtRPS(st.rps)} rps · ${fmtRate(st.successRate)} · ${st.meshedPods} pod${st.meshedPods === 1 ? '' : 's'}` :
        (n.kind === 'workload' ? 'no inbound traffic' : n.kind);
      ng.appendChild(el('text', {x: 10, y: 36, class: 'node-sub'}, sub));
      nodes.appendChild(ng);
    }
    svg.appendChild(nodes);
    svg.appendChild(labels);

    for (const lg of labels.children) {
      const text = lg.querySelector('text'), rect = lg.querySelector('rect');
      const w = text.getComputedTextLength() + 10;
      rect.setAttribute('x', +text.getAttribute('x') - w / 2);
      rect.setAttribute('width', w);
    }
    // Grow the picture to what was drawn: a label or a loop may reach
    // past the last column or below the last lane.
    const bb = svg.getBBox();
    const width = Math.ceil(Math.max(L.width, bb.x + bb.width + MARGIN));
    const height = Math.ceil(Math.max(L.height, bb.y + bb.height + MARGIN));
    for (const r of lanes.querySelectorAll('rect')) r.setAttribute('width', width - 8);
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.setAttribute('width', width);
    svg.setAttribute('height', height);
  }

  function nodeName(g, key) {
    const n = g.nodes.get(key);
    return n.kind === 'workload' ? key : n.name;
  }
  function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + '…' : s; }

  return {build, sourceNode, destinationNode, columns, layout, render, state, fmtRPS, fmtRate, fmtMs, OK_RATE, WARN_RATE};
})();

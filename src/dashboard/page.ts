/**
 * The dashboard's one page: HTML with its CSS and vanilla JS inline, kept
 * here as strings so `dist/` serves it with no asset files to copy and no
 * build step for the browser side. The script only ever inserts data with
 * textContent and setAttribute (MACs and error strings come from the
 * network); the Content-Security-Policy built from the hashes of the
 * inline script and style is a second line: nothing else may run.
 *
 * The room actions (issue #17: next boot, wake) are POSTs with the
 * dashboard's Bearer token. The sysadmin brings the token in the URL's
 * fragment (`#token=...`, never sent to a server, never in a Referer) or
 * pastes it; the page keeps it in this tab's sessionStorage only and takes
 * it out of the address bar and the history at once.
 *
 * The script is plain ES2017 in a string: keep it free of backticks and
 * `${` (this file's template literals would swallow them) and of the
 * sequence that closes a script element.
 */
import { createHash } from 'node:crypto';

const STYLE = `
:root { color-scheme: light; --fg: #1d2430; --muted: #5d6778; --line: #d9dee7; --bg: #f6f7f9; --ok: #1f7a3f; --bad: #b3261e; --accent: #2f5fb3; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { background: #fff; border-bottom: 1px solid var(--line); padding: 12px 20px; }
header h1 { display: inline-block; margin: 0 16px 0 0; font-size: 20px; }
#conn { font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #eee; color: var(--muted); }
#conn[data-state="live"] { background: #e3f4e8; color: var(--ok); }
#conn[data-state="down"] { background: #fbe4e2; color: var(--bad); }
dl.summary { display: flex; flex-wrap: wrap; gap: 4px 24px; margin: 8px 0 0; }
dl.summary div { display: flex; gap: 6px; }
dl.summary dt { color: var(--muted); }
dl.summary dd { margin: 0; font-weight: 600; }
main { padding: 12px 20px 40px; }
h2 { font-size: 16px; margin: 18px 0 8px; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { font-weight: 600; color: var(--muted); background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.mac, td.ip { font-family: ui-monospace, monospace; }
td.mac { font-size: 12px; color: var(--muted); }
td.name { font-weight: 600; }
th.select, td.select { width: 1.5em; padding-right: 0; }
.actionbar { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 14px; background: #fff; border: 1px solid var(--line); padding: 8px; margin-bottom: 8px; }
.actionbar label { display: inline-flex; align-items: center; gap: 4px; }
.actionbar input[type="number"] { width: 5em; }
#act-targets { color: var(--muted); }
#act-result { margin: 0 0 8px; white-space: pre-wrap; overflow-wrap: anywhere; }
#act-result[data-state="ok"] { color: var(--ok); }
#act-result[data-state="error"] { color: var(--bad); font-weight: 600; }
#token-state { font-size: 12px; color: var(--muted); }
#groups { margin: 0 0 8px; color: var(--muted); }
td.error { color: var(--bad); white-space: normal; max-width: 28em; overflow-wrap: anywhere; }
tr.failed td.stage { color: var(--bad); font-weight: 600; }
tr.done td.stage { color: var(--ok); font-weight: 600; }
td.progress { min-width: 150px; }
td.progress progress { width: 100px; vertical-align: middle; }
td.progress .pct { display: inline-block; width: 3.5em; text-align: right; font-variant-numeric: tabular-nums; }
.empty { color: var(--muted); font-style: italic; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 16px; margin-top: 8px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); padding: 8px; }
figcaption { font-weight: 600; margin-bottom: 4px; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { font-size: 10px; fill: var(--muted); }
svg.chart .axis { stroke: #9aa3b2; stroke-width: 1; }
svg.chart .grid { stroke: #eef0f4; stroke-width: 1; }
svg.chart .point { fill: var(--accent); fill-opacity: 0.75; stroke: #fff; }
svg.chart .bar { fill: var(--accent); }
svg.chart .bar.server { fill: #c07a14; }
`;

const SCRIPT = `
'use strict';
(function () {
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var CHART_W = 360, CHART_H = 220, M = { l: 48, r: 12, t: 10, b: 34 };
  var byId = function (id) { return document.getElementById(id); };
  var rows = new Map();
  // MACs ticked for an action; kept across snapshots, dropped with their row.
  var selected = new Set();
  var latest = null;
  var skew = 0;
  var backoff = 1000;

  function setText(el, s) { if (el.textContent !== s) el.textContent = s; }

  function fmtBytes(n) {
    if (!(n >= 0)) return '-';
    var units = ['B', 'kB', 'MB', 'GB', 'TB'];
    var i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(n >= 100 ? 0 : 1)) + ' ' + units[i];
  }
  function fmtMB(n) { return (n / 1e6).toFixed(n >= 1e8 ? 0 : 1) + ' MB'; }
  function fmtRate(n) { return n > 0 ? fmtBytes(n) + '/s' : '-'; }
  function fmtDuration(sec) {
    sec = Math.max(0, Math.floor(sec));
    var h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
    var two = function (x) { return (x < 10 ? '0' : '') + x; };
    return h > 0 ? h + 'h ' + two(m) + 'm ' + two(s) + 's' : m > 0 ? m + 'm ' + two(s) + 's' : s + 's';
  }
  function fmtNumber(v) {
    if (v === 0) return '0';
    var a = Math.abs(v);
    return a >= 100 ? String(Math.round(v)) : a >= 1 ? String(Math.round(v * 10) / 10) : String(Math.round(v * 100) / 100);
  }

  // ---- header ------------------------------------------------------------
  function renderHeader(s) {
    var srv = s.server;
    var addr = srv.address + (srv.httpPort && srv.httpPort !== 80 ? ':' + srv.httpPort : '') + (srv.interface ? ' (' + srv.interface + ')' : '');
    setText(byId('h-address'), addr);
    setText(byId('h-dhcp'), srv.dhcp);
    setText(byId('h-env'), srv.environment);
    setText(byId('h-booted'), String(s.totals.booted));
    setText(byId('h-failed'), String(s.totals.failed));
    var sent = s.totals.sent;
    setText(byId('h-traffic'), 'server sent ' + fmtMB(sent.total) + ' (phase 1 ' + fmtMB(sent.phase1) + ', OS ' + fmtMB(sent.os) + ') for ' + fmtMB(s.totals.delivered) + ' delivered');
    // A satellite (server.upstream): whether its upstream answers, what it still fetches.
    var up = srv.upstream;
    byId('h-upstream-row').hidden = !up;
    if (up) {
      var state = up.reachable === null ? 'not asked yet' : up.reachable ? 'answers'
        : 'does not answer (' + (up.error || 'unknown error') + '); booting with what this server has';
      var fetching = up.fetching.map(function (f) { return f.id + ' ' + Math.round(f.progress * 100) + ' %'; }).join(', ');
      setText(byId('h-upstream'), up.url + ': ' + state + (fetching ? '; fetching ' + fetching : ''));
    }
    document.title = 'BootTorrent: ' + srv.environment;
    tickUptime();
  }
  function tickUptime() {
    if (latest) setText(byId('h-uptime'), fmtDuration((Date.now() + skew - latest.startedAt) / 1000));
  }

  // A machine as people call it, its name in the environment, with the MAC
  // that the firmware, the logs and the other tools show.
  function who(c) { return c.name ? c.name + ' (' + c.mac + ')' : c.mac; }
  function fmtNext(nb) {
    if (!nb) return '-';
    return nb.os + (nb.once ? ' (once)' : '') + (nb.via && nb.via !== 'machine' ? ' via ' + nb.via : '');
  }

  // ---- client rows -------------------------------------------------------
  var CLIENT_CELLS = ['select', 'name', 'mac', 'ip', 'firmware', 'stage', 'os', 'next', 'progress', 'down num', 'up num', 'peers num', 'ratio num', 'error'];
  function makeRow(mac) {
    var tr = document.createElement('tr');
    tr.setAttribute('data-mac', mac);
    var cells = {};
    CLIENT_CELLS.forEach(function (cls) {
      var td = document.createElement('td');
      td.className = cls;
      tr.appendChild(td);
      cells[cls.split(' ')[0]] = td;
    });
    var box = document.createElement('input');
    box.type = 'checkbox';
    box.setAttribute('aria-label', 'select ' + mac);
    box.addEventListener('change', function () {
      if (box.checked) selected.add(mac);
      else selected.delete(mac);
      updateSelection();
    });
    cells.select.appendChild(box);
    var bar = document.createElement('progress');
    bar.max = 1;
    bar.value = 0;
    var pct = document.createElement('span');
    pct.className = 'pct';
    cells.progress.appendChild(bar);
    cells.progress.appendChild(pct);
    return { tr: tr, cells: cells, bar: bar, pct: pct, box: box };
  }
  function updateRow(r, c) {
    var k = r.cells;
    setText(k.name, c.name || '-');
    if (k.name.title !== c.mac) k.name.title = c.mac;
    setText(k.mac, c.mac);
    setText(k.next, fmtNext(c.nextBoot));
    if (r.box.checked !== selected.has(c.mac)) r.box.checked = selected.has(c.mac);
    setText(k.ip, c.ip || '-');
    // Secure Boot as the client's agent reports it, shown for UEFI firmware only.
    var sb = c.secureBoot === true && (c.firmware || 'uefi').indexOf('uefi') === 0;
    setText(k.firmware, (c.firmware || '-') + (sb ? ' \u00b7 Secure Boot' : ''));
    setText(k.stage, c.stage);
    setText(k.os, c.os || '-');
    var p = Math.max(0, Math.min(1, Number(c.progress) || 0));
    if (r.bar.value !== p) r.bar.value = p;
    // Floor, so a client at 99.6 % never reads as done.
    setText(r.pct, Math.floor(p * 100) + '%');
    // Rates are the last report's: once a client stops transferring they are stale.
    var moving = c.stage === 'downloading' || c.stage === 'verifying' || c.stage === 'seeding';
    setText(k.down, moving ? fmtRate(c.downloadRate) : '-');
    setText(k.up, moving ? fmtRate(c.uploadRate) : '-');
    setText(k.peers, String(c.peers));
    setText(k.ratio, c.os ? c.seedRatio.toFixed(2) : '-');
    setText(k.error, c.error || '');
    r.tr.className = c.stage === 'failed' ? 'failed' : c.stage === 'booting' || c.stage === 'running' ? 'done' : '';
  }
  function renderClients(list) {
    var body = byId('clients').tBodies[0];
    var seen = new Set();
    list.forEach(function (c) {
      seen.add(c.mac);
      var r = rows.get(c.mac);
      if (!r) { r = makeRow(c.mac); rows.set(c.mac, r); }
      updateRow(r, c);
      // appendChild moves an existing row: the table follows the snapshot's order.
      if (body.lastElementChild !== r.tr || r.tr.parentNode !== body) body.appendChild(r.tr);
    });
    rows.forEach(function (r, mac) {
      if (!seen.has(mac)) { r.tr.remove(); rows.delete(mac); selected.delete(mac); }
    });
    setText(byId('client-count'), String(list.length));
    byId('no-clients').hidden = list.length > 0;
  }

  // ---- swarm rows --------------------------------------------------------
  function renderSwarms(list) {
    var body = byId('swarms').tBodies[0];
    var fresh = document.createDocumentFragment();
    list.forEach(function (w) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-os', w.os);
      [[w.name || w.os, ''], [fmtBytes(w.size), 'num'], [String(w.seeders), 'num'], [String(w.leechers), 'num'],
        [String(w.completed), 'num'], [fmtBytes(w.serverUploaded), 'num']].forEach(function (v) {
        var td = document.createElement('td');
        td.className = v[1];
        td.textContent = v[0];
        tr.appendChild(td);
      });
      fresh.appendChild(tr);
    });
    body.replaceChildren(fresh);
    byId('no-swarms').hidden = list.length > 0;
  }

  // ---- charts (inline SVG) -----------------------------------------------
  function el(name, attrs, parent) {
    var e = document.createElementNS(SVG_NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (parent) parent.appendChild(e);
    return e;
  }
  function label(parent, x, y, s, anchor, rotate) {
    var t = el('text', { x: x, y: y, 'text-anchor': anchor || 'middle' }, parent);
    if (rotate) t.setAttribute('transform', 'rotate(-90 ' + x + ' ' + y + ')');
    t.textContent = s;
    return t;
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }
  // Frame, grid and y ticks; returns the scale functions.
  function frame(svg, yMax, yLabel, yFmt) {
    svg.replaceChildren();
    var iw = CHART_W - M.l - M.r, ih = CHART_H - M.t - M.b;
    var y = function (v) { return M.t + ih - (v / yMax) * ih; };
    for (var i = 0; i <= 4; i++) {
      var v = (yMax * i) / 4, yy = y(v);
      el('line', { class: 'grid', x1: M.l, x2: M.l + iw, y1: yy, y2: yy }, svg);
      label(svg, M.l - 4, yy + 3, yFmt(v), 'end');
    }
    el('line', { class: 'axis', x1: M.l, x2: M.l, y1: M.t, y2: M.t + ih }, svg);
    el('line', { class: 'axis', x1: M.l, x2: M.l + iw, y1: M.t + ih, y2: M.t + ih }, svg);
    label(svg, 11, M.t + ih / 2, yLabel, 'middle', true);
    return { iw: iw, ih: ih, y: y };
  }
  function emptyNote(svg, s) { label(svg, CHART_W / 2, CHART_H / 2, s); }

  // Boot time per client against how many were booting when it started.
  function chartBoot(svg, clients) {
    var pts = clients.filter(function (c) { return c.bootSeconds !== null && c.bootSeconds !== undefined; });
    var yMax = niceMax(Math.max.apply(null, pts.map(function (c) { return c.bootSeconds; }).concat([1])));
    // One spare step on the right, so the busiest point is not on the frame.
    var xMax = Math.max.apply(null, pts.map(function (c) { return c.concurrent; }).concat([1])) + 1;
    var f = frame(svg, yMax, 'boot time (s)', fmtNumber);
    var x = function (v) { return M.l + (v / xMax) * f.iw; };
    var step = Math.max(1, Math.ceil(xMax / 8));
    for (var n = 0; n <= xMax; n += step) label(svg, x(n), M.t + f.ih + 13, String(n));
    label(svg, M.l + f.iw / 2, CHART_H - 4, 'clients booting at once');
    if (pts.length === 0) return emptyNote(svg, 'no client has booted yet');
    pts.forEach(function (c) {
      var p = el('circle', { class: 'point', cx: x(c.concurrent), cy: f.y(c.bootSeconds), r: 4, 'data-mac': c.mac }, svg);
      el('title', {}, p).textContent = who(c) + ': ' + fmtNumber(c.bootSeconds) + ' s with ' + c.concurrent + ' booting';
    });
  }
  function bars(svg, items, yLabel, yFmt, tip) {
    var yMax = niceMax(Math.max.apply(null, items.map(function (b) { return b.value; }).concat([0])));
    var f = frame(svg, yMax, yLabel, yFmt);
    if (items.length === 0) return emptyNote(svg, 'no data yet');
    var slot = f.iw / items.length, w = Math.max(1, Math.min(48, slot * 0.7));
    items.forEach(function (b, i) {
      var cx = M.l + slot * (i + 0.5), top = f.y(b.value);
      var r = el('rect', { class: 'bar ' + (b.cls || ''), x: cx - w / 2, y: top, width: w, height: Math.max(0, M.t + f.ih - top), 'data-label': b.label }, svg);
      el('title', {}, r).textContent = b.label + ': ' + tip(b.value);
      if (slot >= 26) label(svg, cx, M.t + f.ih + 13, b.short || b.label);
    });
  }
  // What the server sent against what one client sent, on average: the
  // peer-to-peer claim is that the server's share stays near one copy per OS.
  function chartSent(svg, s) {
    var reporting = s.clients.filter(function (c) { return c.os; });
    var items = [{ label: 'server', value: s.totals.serverUploaded, cls: 'server' }];
    if (reporting.length > 0) {
      var sum = reporting.reduce(function (a, c) { return a + c.uploaded; }, 0);
      items.push({ label: 'mean client', value: sum / reporting.length });
    }
    if (s.totals.serverUploaded === 0 && reporting.length === 0) items = [];
    bars(svg, items, 'MB sent', function (v) { return fmtNumber(v / 1e6); }, fmtBytes);
  }
  function chartRatio(svg, clients) {
    var items = clients.filter(function (c) { return c.os; }).map(function (c) {
      // Under the bar: the name, cut to fit, or the MAC's last two bytes; the tooltip has both.
      var short = c.name ? (c.name.length > 8 ? c.name.slice(0, 7) + '\u2026' : c.name) : c.mac.slice(-5);
      return { label: who(c), short: short, value: c.seedRatio };
    });
    bars(svg, items, 'seed ratio', fmtNumber, function (v) { return v.toFixed(2); });
  }

  function render(s) {
    latest = s;
    skew = s.now - Date.now();
    renderHeader(s);
    renderClients(s.clients);
    renderSwarms(s.swarms);
    renderChoices(s);
    chartBoot(byId('chart-boot'), s.clients);
    chartSent(byId('chart-sent'), s);
    chartRatio(byId('chart-ratio'), s.clients);
  }

  // ---- room actions (next boot, wake) --------------------------------------
  var TOKEN_KEY = 'boottorrent.token';
  // Where sessionStorage is off (a locked-down browser), the token lives as long as the page.
  var memoryToken = '';
  var busy = false;

  function getToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }
  function setToken(t) {
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage off: memoryToken below */ }
    memoryToken = t;
    showTokenState();
  }
  function token() { return getToken() || memoryToken; }
  function showTokenState() {
    setText(byId('token-state'), token() ? 'token set (this tab only)' : 'no token: actions will be refused');
  }
  // #token=... in the address: keep it, then take it out of the address bar
  // and the history, so a screenshot or a shared link does not carry it.
  function tokenFromHash() {
    var m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!m) return;
    var t = m[1];
    try { t = decodeURIComponent(t); } catch (e) { /* used as written */ }
    setToken(t.trim());
    history.replaceState(null, '', location.pathname + location.search);
  }

  function nameOfMac(mac) {
    var c = latest && latest.clients.find(function (x) { return x.mac === mac; });
    if (c && c.name) return c.name;
    var h = latest && latest.room && latest.room.hosts.find(function (x) { return x.mac === mac; });
    return h ? h.name : mac;
  }
  function listed(names) {
    return names.length > 8 ? names.slice(0, 8).join(', ') + ' and ' + (names.length - 8) + ' more' : names.join(', ');
  }

  // The OS and group choices follow the snapshot; rebuilt only when they change, so a choice stays.
  function fillSelect(sel, items, first) {
    var key = JSON.stringify(items);
    if (sel.getAttribute('data-key') === key) return;
    sel.setAttribute('data-key', key);
    var keep = sel.value;
    var fresh = document.createDocumentFragment();
    if (first) items = [first].concat(items);
    items.forEach(function (it) {
      var o = document.createElement('option');
      o.value = it[0];
      o.textContent = it[1];
      fresh.appendChild(o);
    });
    sel.replaceChildren(fresh);
    if (items.some(function (it) { return it[0] === keep; })) sel.value = keep;
  }
  function renderChoices(s) {
    fillSelect(byId('act-os'), s.swarms.map(function (w) {
      return [w.os, w.name && w.name !== w.os ? w.os + ' (' + w.name + ')' : w.os];
    }));
    var groups = (s.room && s.room.groups) || [];
    fillSelect(byId('act-group'), groups.map(function (g) {
      return [g.name, g.name + (g.nextBoot ? ' \u2014 next: ' + fmtNext(g.nextBoot) : '')];
    }), ['', '(no group)']);
    var p = byId('groups');
    p.hidden = groups.length === 0;
    setText(p, groups.length === 0 ? '' : 'Groups: ' + groups.map(function (g) {
      return g.name + (g.nextBoot ? ' (next boot ' + fmtNext(g.nextBoot) + ')' : '');
    }).join(' \u00b7 '));
    updateSelection();
  }

  // Ticked machines (in table order) and the chosen group: what an action names.
  function targets() {
    var out = [];
    rows.forEach(function (r, mac) { if (selected.has(mac)) out.push(mac); });
    var g = byId('act-group').value;
    if (g) out.push(g);
    return out;
  }
  function updateSelection() {
    var n = 0;
    rows.forEach(function (r, mac) { if (selected.has(mac)) n++; });
    var all = byId('select-all');
    all.checked = n > 0 && n === rows.size;
    all.indeterminate = n > 0 && n < rows.size;
    var g = byId('act-group').value;
    var parts = [];
    if (n > 0) parts.push(n + (n === 1 ? ' machine' : ' machines'));
    if (g) parts.push('group ' + g);
    setText(byId('act-targets'), parts.length ? 'targets: ' + parts.join(' and ') : 'tick machines or choose a group');
  }

  function showResult(state, s) {
    var p = byId('act-result');
    p.setAttribute('data-state', state);
    setText(p, s);
  }
  function setBusy(b) {
    busy = b;
    ['act-next', 'act-clear', 'act-wake'].forEach(function (id) { byId(id).disabled = b; });
  }
  // The snapshot right after an action: the stream only sends one when a client changes.
  function refresh() {
    return fetch('/api/v1/status', { cache: 'no-store' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) { if (s) render(s); })
      .catch(function () { /* the stream brings it later */ });
  }
  // Every answer is shown as text: the server's error strings name what the sysadmin typed.
  function send(name, body, describe) {
    if (busy) return;
    if (body.targets.length === 0) {
      showResult('error', 'nothing to act on: tick machines in the table or choose a group');
      return;
    }
    var headers = { 'content-type': 'application/json' };
    var t = token();
    // Sent without a token too: the server's refusal says what is missing.
    if (t) headers.authorization = 'Bearer ' + t;
    setBusy(true);
    showResult('pending', name + ': sending...');
    fetch('/api/v1/actions/' + name, {
      method: 'POST', headers: headers, body: JSON.stringify(body), cache: 'no-store', credentials: 'omit',
    })
      .then(function (res) {
        return res.text().then(function (text) {
          var data = null;
          try { data = JSON.parse(text); } catch (e) { data = null; }
          if (!res.ok) {
            var why = data && typeof data.error === 'string' ? data.error : 'HTTP ' + res.status;
            showResult('error', 'the server refused (' + res.status + '): ' + why +
              (res.status === 401 ? ' \u2014 open the dashboard with #token=... (the token in server.json, in the state folder), or paste it in the Token field' : ''));
            return;
          }
          showResult('ok', describe(data || {}));
          return refresh();
        });
      })
      .catch(function (e) { showResult('error', name + ' failed: ' + (e && e.message ? e.message : String(e))); })
      .then(function () { setBusy(false); });
  }
  function describeSet(data) {
    var set = Array.isArray(data.set) ? data.set : [];
    var names = set.map(function (x) { return x.kind === 'group' ? 'group ' + x.target : nameOfMac(x.target); });
    var first = set[0];
    if (!first) return 'done';
    return first.os === null
      ? 'next boot cleared: ' + listed(names)
      : 'next boot of ' + listed(names) + ': ' + fmtNext({ os: first.os, once: first.once });
  }
  function describeWake(data) {
    var list = Array.isArray(data.waking) ? data.waking : [];
    var s = 'waking ' + listed(list.map(function (m) { return m.name || m.mac; })) +
      ' over ' + fmtNumber(Number(data.spreadSeconds) || 0) + ' s';
    if (Array.isArray(data.unlisted) && data.unlisted.length)
      s += '; not woken (no MAC to send to): ' + data.unlisted.join(', ');
    return s;
  }

  function setUpActions() {
    tokenFromHash();
    window.addEventListener('hashchange', tokenFromHash);
    showTokenState();
    var input = byId('token-input');
    var use = function () {
      var v = input.value.trim();
      input.value = '';
      if (v) setToken(v);
    };
    byId('token-use').addEventListener('click', use);
    input.addEventListener('keydown', function (ev) { if (ev.key === 'Enter') use(); });
    byId('token-forget').addEventListener('click', function () { setToken(''); });
    byId('select-all').addEventListener('change', function (ev) {
      var on = ev.target.checked;
      rows.forEach(function (r, mac) {
        if (on) selected.add(mac);
        else selected.delete(mac);
        r.box.checked = on;
      });
      updateSelection();
    });
    byId('act-group').addEventListener('change', updateSelection);
    byId('act-next').addEventListener('click', function () {
      send('next-boot', { targets: targets(), os: byId('act-os').value, once: byId('act-once').checked }, describeSet);
    });
    byId('act-clear').addEventListener('click', function () {
      send('next-boot', { targets: targets(), os: null }, describeSet);
    });
    byId('act-wake').addEventListener('click', function () {
      var body = { targets: targets() };
      var spread = byId('act-spread').value.trim();
      // An unreadable number goes as null: the server says what it expects.
      if (spread !== '') body.spread = Number(spread);
      send('wake', body, describeWake);
    });
    updateSelection();
  }

  // ---- live updates ------------------------------------------------------
  function setConn(state, s) {
    var c = byId('conn');
    c.setAttribute('data-state', state);
    setText(c, s);
  }
  function connect() {
    var es = new EventSource('/api/v1/events');
    es.addEventListener('snapshot', function (ev) {
      var s;
      try { s = JSON.parse(ev.data); } catch (e) { return; }
      backoff = 1000;
      setConn('live', 'live');
      render(s);
    });
    es.onerror = function () {
      // The browser retries a dropped stream itself; after a refusal
      // (e.g. 503, too many viewers) it gives up, so retry here with backoff.
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        setConn('down', 'disconnected, retrying');
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 15000);
      } else {
        setConn('down', 'reconnecting');
      }
    };
  }
  setInterval(tickUptime, 1000);
  setUpActions();
  connect();
})();
`;

const BODY = `<header>
<h1>BootTorrent</h1><span id="conn" data-state="connecting">connecting</span>
<dl class="summary">
<div><dt>Server</dt><dd id="h-address">-</dd></div>
<div><dt>DHCP</dt><dd id="h-dhcp">-</dd></div>
<div><dt>Environment</dt><dd id="h-env">-</dd></div>
<div><dt>Uptime</dt><dd id="h-uptime">-</dd></div>
<div><dt>Booted</dt><dd id="h-booted">0</dd></div>
<div><dt>Failed</dt><dd id="h-failed">0</dd></div>
<div><dt>Traffic</dt><dd id="h-traffic">-</dd></div>
<div id="h-upstream-row" hidden><dt>Upstream</dt><dd id="h-upstream">-</dd></div>
</dl>
</header>
<main>
<section>
<h2>Clients (<span id="client-count">0</span>)</h2>
<div class="actionbar" id="actions">
<label>Group <select id="act-group"></select></label>
<label>OS <select id="act-os"></select></label>
<label><input type="checkbox" id="act-once" checked> once</label>
<button type="button" id="act-next">Next boot</button>
<button type="button" id="act-clear">Clear next boot</button>
<label>spread <input type="number" id="act-spread" min="0" max="3600" step="any" placeholder="auto"> s</label>
<button type="button" id="act-wake">Wake</button>
<span id="act-targets"></span>
</div>
<div class="actionbar" id="token-bar">
<label>Token <input type="password" id="token-input" autocomplete="off" spellcheck="false" placeholder="from server.json"></label>
<button type="button" id="token-use">Use token</button>
<button type="button" id="token-forget">Forget token</button>
<span id="token-state"></span>
</div>
<p id="act-result" role="status" aria-live="polite"></p>
<p id="groups" hidden></p>
<table id="clients"><thead><tr><th class="select"><input type="checkbox" id="select-all" aria-label="select every machine"></th><th>Name</th><th>MAC</th><th>IP</th><th>Firmware</th><th>Stage</th><th>OS</th><th>Next boot</th><th>Progress</th><th>Down</th><th>Up</th><th>Peers</th><th>Seed ratio</th><th>Error</th></tr></thead><tbody></tbody></table>
<p id="no-clients" class="empty">No clients yet.</p>
</section>
<section>
<h2>Swarms</h2>
<table id="swarms"><thead><tr><th>OS</th><th>Size</th><th>Seeders</th><th>Leechers</th><th>Completed</th><th>Server uploaded</th></tr></thead><tbody></tbody></table>
<p id="no-swarms" class="empty">No swarms.</p>
</section>
<section>
<h2>Measurements</h2>
<div class="charts">
<figure><figcaption>Boot time per client against clients booting</figcaption><svg id="chart-boot" class="chart" viewBox="0 0 360 220" role="img" aria-label="boot time against clients booting"></svg></figure>
<figure><figcaption>Mean bytes sent per node</figcaption><svg id="chart-sent" class="chart" viewBox="0 0 360 220" role="img" aria-label="bytes sent by the server and by a mean client"></svg></figure>
<figure><figcaption>Seed ratio per node</figcaption><svg id="chart-ratio" class="chart" viewBox="0 0 360 220" role="img" aria-label="seed ratio per client"></svg></figure>
</div>
</section>
</main>`;

const sha256 = (s: string) => `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;

export interface DashboardPage {
  readonly html: string;
  /** Allows exactly the inline script and style above, and fetches to this origin. */
  readonly contentSecurityPolicy: string;
}

/** The page and the policy that goes with it (built once: both are constant). */
export function dashboardPage(): DashboardPage {
  const html =
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">' +
    '<meta name="viewport" content="width=device-width, initial-scale=1">' +
    `<title>BootTorrent</title><style>${STYLE}</style></head>\n<body>\n${BODY}\n<script>${SCRIPT}</script>\n</body></html>\n`;
  const contentSecurityPolicy = [
    "default-src 'none'",
    `script-src ${sha256(SCRIPT)}`,
    `style-src ${sha256(STYLE)}`,
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return { html, contentSecurityPolicy };
}

/** The inline script, for tests that check it stays free of what would break out of its element. */
export const DASHBOARD_SCRIPT = SCRIPT;

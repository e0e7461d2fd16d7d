/**
 * The status page served at `/`: hand-made HTML, CSS and JavaScript with inline SVG charts, no
 * runtime dependency and nothing loaded from elsewhere (the Content-Security-Policy forbids it).
 * It polls `/stats`, `/upstreams` and `/events` every second; a token comes from the URL's
 * fragment (`/#token=...`, never sent to the server in the URL) and is kept for the tab only.
 */

export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>l4proxy status</title>
<link rel="stylesheet" href="/status.css">
<script src="/status.js" defer></script>
</head>
<body>
<header>
  <h1>l4proxy</h1>
  <span id="summary" class="muted">connecting…</span>
  <span id="updated" class="muted"></span>
</header>
<div id="auth" class="notice" hidden>
  <form id="auth-form">
    <label for="token">This admin API needs its bearer token</label>
    <input id="token" type="password" autocomplete="off" placeholder="token">
    <button type="submit">Use</button>
  </form>
</div>
<div id="problem" class="notice bad" hidden></div>
<main id="listeners"></main>
<section class="card" id="events-card">
  <h2>Recent events</h2>
  <div class="scroll"><table id="events"><thead><tr><th>time</th><th>listener</th><th>kind</th><th>reason</th><th>detail</th></tr></thead><tbody></tbody></table></div>
</section>
<footer class="muted">JSON: <a href="/stats">/stats</a> · <a href="/upstreams">/upstreams</a> · <a href="/metrics">/metrics</a> · <a href="/config">/config</a> · <a href="/events">/events</a></footer>
</body>
</html>
`;

export const STATUS_PAGE_STYLE = `:root {
  --bg: #f6f7f9; --card: #fff; --text: #1d2430; --muted: #6a7382; --line: #e2e6ec;
  --ok: #1f9d55; --bad: #d64545; --warn: #d98a00; --off: #8a93a3; --accent: #2f6fdf; --accent2: #8e44ad;
}
@media (prefers-color-scheme: dark) {
  :root { --bg: #12151b; --card: #1b2029; --text: #e6e9ef; --muted: #98a2b3; --line: #2b323e; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--text); }
header { display: flex; flex-wrap: wrap; gap: .4rem 1rem; align-items: baseline; padding: .8rem 1rem; border-bottom: 1px solid var(--line); background: var(--card); position: sticky; top: 0; z-index: 1; }
h1 { font-size: 1.2rem; margin: 0; }
h2 { font-size: 1rem; margin: 0 0 .6rem; display: flex; gap: .5rem; align-items: baseline; flex-wrap: wrap; }
main { display: grid; gap: 1rem; padding: 1rem; grid-template-columns: repeat(auto-fit, minmax(min(100%, 38rem), 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .9rem; min-width: 0; }
#events-card { margin: 0 1rem 1rem; }
.muted { color: var(--muted); }
.tag { font-size: .75rem; padding: .05rem .4rem; border-radius: 4px; background: var(--line); color: var(--text); }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(9rem, 1fr)); gap: .6rem; margin-bottom: .8rem; }
.chart { border: 1px solid var(--line); border-radius: 6px; padding: .4rem .5rem; }
.chart .value { font-size: 1.15rem; font-variant-numeric: tabular-nums; }
.chart svg { display: block; width: 100%; height: 40px; }
.chart polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; vector-effect: non-scaling-stroke; }
.chart polyline.second { stroke: var(--accent2); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: .3rem .45rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: .8rem; }
td.detail { white-space: normal; min-width: 12rem; }
.dot { display: inline-block; width: .7rem; height: .7rem; border-radius: 50%; margin-right: .35rem; vertical-align: -1px; }
tr[data-state="up"] .dot { background: var(--ok); }
tr[data-state="down"] .dot { background: var(--bad); }
tr[data-state="drain"] .dot { background: var(--warn); }
tr[data-state="maint"] .dot { background: var(--off); }
tr[data-state="down"] td.state { color: var(--bad); font-weight: 600; }
tr[data-state="drain"] td.state { color: var(--warn); }
button { font: inherit; padding: .15rem .5rem; border: 1px solid var(--line); border-radius: 4px; background: var(--bg); color: var(--text); cursor: pointer; }
button:hover { border-color: var(--accent); }
.reasons { display: flex; flex-wrap: wrap; gap: .3rem; margin-top: .6rem; }
.reasons .tag.bad { background: var(--bad); color: #fff; }
.notice { margin: 1rem; padding: .7rem; border-radius: 6px; background: var(--card); border: 1px solid var(--warn); }
.notice.bad { border-color: var(--bad); }
.notice form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
input { font: inherit; padding: .25rem .4rem; }
footer { padding: 0 1rem 1rem; }
a { color: var(--accent); }
@media (max-width: 40rem) {
  .actions button { padding: .35rem .6rem; }
  th, td { padding: .35rem .3rem; }
}
`;

export const STATUS_PAGE_SCRIPT = `'use strict';
(function () {
  var HISTORY = 60;
  var token = readToken();
  var previous = null;
  var series = {};
  var timer = null;

  function readToken() {
    var match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem('l4proxy-token', decodeURIComponent(match[1]));
      history.replaceState(null, '', location.pathname);
    }
    return sessionStorage.getItem('l4proxy-token');
  }

  function headers() {
    return token ? { authorization: 'Bearer ' + token } : {};
  }

  function get(path) {
    return fetch(path, { headers: headers(), cache: 'no-store' }).then(function (res) {
      if (res.status === 401) throw { auth: true };
      if (res.status === 429) throw { auth: true, wait: res.headers.get('retry-after') };
      if (!res.ok) throw new Error(path + ': HTTP ' + res.status);
      return res.json();
    });
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var key in attrs || {}) {
      if (key === 'text') node.textContent = attrs[key];
      else node.setAttribute(key, attrs[key]);
    }
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    return node;
  }

  function human(value, unit) {
    var abs = Math.abs(value);
    var scales = [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
    for (var i = 0; i < scales.length; i++) {
      if (abs >= scales[i][0]) return (value / scales[i][0]).toFixed(1) + ' ' + scales[i][1] + unit;
    }
    return (abs >= 10 || value === 0 ? value.toFixed(0) : value.toFixed(1)) + ' ' + unit;
  }

  function push(key, value) {
    var list = series[key] || (series[key] = []);
    list.push(value);
    if (list.length > HISTORY) list.shift();
    return list;
  }

  /** A sparkline of one or two series scaled to the larger maximum. */
  function chart(lists) {
    var max = 1;
    lists.forEach(function (list) { list.forEach(function (v) { if (v > max) max = v; }); });
    var node = svg('svg', { viewBox: '0 0 ' + (HISTORY - 1) + ' 40', preserveAspectRatio: 'none', 'aria-hidden': 'true' });
    lists.forEach(function (list, index) {
      var offset = HISTORY - list.length;
      var points = list.map(function (v, i) { return (offset + i) + ',' + (39 - (v / max) * 37).toFixed(2); }).join(' ');
      node.appendChild(svg('polyline', { points: points, class: index === 0 ? 'first' : 'second' }));
    });
    return node;
  }

  function tile(name, label, text, lists) {
    return el('div', { class: 'chart', 'data-chart': name }, [
      el('div', { class: 'muted', text: label }),
      el('div', { class: 'value', 'data-rate': name, text: text }),
      chart(lists),
    ]);
  }

  function upstreamState(u) {
    if (u.admin === 'maint') return 'maint';
    if (u.admin === 'drain') return 'drain';
    return u.health.active && !u.health.ejected ? 'up' : 'down';
  }

  var STATE_TEXT = { up: 'up', down: 'DOWN', drain: 'draining', maint: 'disabled' };

  function act(listener, id, action) {
    var url = '/upstreams/' + encodeURIComponent(listener) + '/' + encodeURIComponent(id) + '/' + action;
    fetch(url, { method: 'POST', headers: headers() }).then(refresh, refresh);
  }

  function upstreamTable(name, upstreams) {
    var body = el('tbody');
    upstreams.forEach(function (u) {
      var state = upstreamState(u);
      var health = !u.health.active ? 'check failed' : u.health.ejected ? 'ejected' : 'ok';
      var actions = el('td', { class: 'actions' });
      [['drain', 'Drain'], ['disable', 'Disable'], ['enable', 'Enable']].forEach(function (pair) {
        if ((pair[0] === 'enable') === (u.admin === 'ready')) return;
        var button = el('button', { type: 'button', 'data-action': pair[0], text: pair[1] });
        button.addEventListener('click', function () { act(name, u.id, pair[0]); });
        actions.appendChild(button);
      });
      body.appendChild(el('tr', { 'data-upstream': u.id, 'data-listener': name, 'data-state': state }, [
        el('td', {}, [el('span', { class: 'dot' }), document.createTextNode(u.id)]),
        el('td', { class: 'state', text: STATE_TEXT[state] }),
        el('td', u.health.lastFailure ? { text: health, title: 'last check failure: ' + u.health.lastFailure.reason } : { text: health }),
        el('td', { text: u.weight === u.configuredWeight ? String(u.weight) : u.weight + ' (was ' + u.configuredWeight + ')' }),
        el('td', { 'data-field': 'active', text: String(u.active) }),
        el('td', { text: String(u.total) }),
        el('td', { text: String(u.connectFailures) }),
        el('td', { text: String(u.health.ejections) }),
        actions,
      ]));
    });
    var head = el('tr');
    ['upstream', 'state', 'health', 'weight', 'active', 'total', 'failed', 'ejections', ''].forEach(function (h) {
      head.appendChild(el('th', { text: h }));
    });
    return el('div', { class: 'scroll' }, [el('table', { class: 'upstreams' }, [el('thead', {}, [head]), body])]);
  }

  function reasonTags(stats, protocol) {
    var box = el('div', { class: 'reasons', 'data-reasons': '' });
    var groups = protocol === 'tcp'
      ? [['rejected', stats.rejected_reasons], ['closed', stats.close_reasons]]
      : [['dropped', stats.dropped], ['closed', stats.session_close_reasons]];
    groups.forEach(function (group) {
      var counts = group[1] || {};
      Object.keys(counts).forEach(function (reason) {
        if (!counts[reason] || reason === 'completed' || reason === 'idle_timeout') return;
        box.appendChild(el('span', { class: 'tag bad', 'data-reason': reason, text: group[0] + ' ' + reason + ': ' + counts[reason] }));
      });
    });
    if (!box.firstChild) box.appendChild(el('span', { class: 'muted', text: 'no rejections or errors' }));
    return box;
  }

  function rates(name, protocol, stats, dt) {
    var before = previous && previous.listeners[name];
    var opened = protocol === 'tcp' ? stats.downstream_cx_total : stats.downstream_sess_total;
    var inBytes = protocol === 'tcp' ? stats.downstream_cx_rx_bytes_total : stats.downstream_sess_rx_bytes;
    var outBytes = protocol === 'tcp' ? stats.downstream_cx_tx_bytes_total : stats.downstream_sess_tx_bytes;
    if (!before || dt <= 0) return { opened: 0, inBytes: 0, outBytes: 0, totals: [opened, inBytes, outBytes] };
    var b = before.totals;
    return {
      opened: Math.max(0, opened - b[0]) / dt,
      inBytes: Math.max(0, inBytes - b[1]) / dt,
      outBytes: Math.max(0, outBytes - b[2]) / dt,
      totals: [opened, inBytes, outBytes],
    };
  }

  /** Runs of the same event (a dead upstream refusing every attempt) shown once, with a count. */
  function collapse(list) {
    var out = [];
    list.forEach(function (e) {
      var last = out[out.length - 1];
      if (last && last.listener === e.listener && last.kind === e.kind && last.reason === e.reason && last.detail === e.detail) last.count++;
      else out.push({ time: e.time, listener: e.listener, kind: e.kind, reason: e.reason, detail: e.detail, count: 1 });
    });
    return out;
  }

  function render(stats, upstreams, events) {
    var now = stats.time;
    var dt = previous ? (now - previous.time) / 1000 : 0;
    var next = { time: now, listeners: {} };
    var main = document.getElementById('listeners');
    var cards = [];
    var names = Object.keys(stats.listeners);
    names.forEach(function (name) {
      var entry = stats.listeners[name];
      var s = entry.stats;
      var r = rates(name, entry.protocol, s, dt);
      next.listeners[name] = { totals: r.totals };
      var active = entry.protocol === 'tcp' ? s.downstream_cx_active : s.downstream_sess_active;
      var unit = entry.protocol === 'tcp' ? 'conn/s' : 'sess/s';
      var openedList = push(name + ':opened', r.opened);
      var activeList = push(name + ':active', active);
      var inList = push(name + ':in', r.inBytes);
      var outList = push(name + ':out', r.outBytes);
      var ups = (upstreams.listeners[name] || { upstreams: [] }).upstreams;
      var down = ups.filter(function (u) { return upstreamState(u) === 'down'; }).length;
      cards.push(el('section', { class: 'card', 'data-listener': name }, [
        el('h2', {}, [
          document.createTextNode(name),
          el('span', { class: 'tag', text: entry.protocol }),
          el('span', { class: 'muted', text: ups.length + ' upstreams' + (down ? ', ' + down + ' down' : '') }),
        ]),
        el('div', { class: 'charts' }, [
          tile('connections', entry.protocol === 'tcp' ? 'new connections' : 'new sessions', r.opened.toFixed(1) + ' ' + unit, [openedList]),
          tile('active', 'active', String(active), [activeList]),
          tile('bytes', 'bytes in / out', human(r.inBytes, 'B/s') + ' / ' + human(r.outBytes, 'B/s'), [inList, outList]),
        ]),
        upstreamTable(name, ups),
        reasonTags(s, entry.protocol),
      ]));
    });
    main.replaceChildren.apply(main, cards);
    previous = next;
    var tbody = document.querySelector('#events tbody');
    tbody.replaceChildren.apply(tbody, collapse(events.events).slice(0, 20).map(function (e) {
      return el('tr', { 'data-kind': e.kind }, [
        el('td', { text: new Date(e.time).toLocaleTimeString() }),
        el('td', { text: e.listener }),
        el('td', { text: e.kind }),
        el('td', { text: e.reason }),
        el('td', { class: 'detail', text: e.count > 1 ? e.detail + ' (\u00d7' + e.count + ')' : e.detail }),
      ]);
    }));
    document.getElementById('summary').textContent = names.length + ' listeners, up ' + stats.uptimeSeconds + ' s';
    document.getElementById('updated').textContent = 'updated ' + new Date(now).toLocaleTimeString();
    document.body.setAttribute('data-updates', String(Number(document.body.getAttribute('data-updates') || 0) + 1));
  }

  /** Resolves false when the token was refused: polling stops until another is entered. */
  function refresh() {
    var problem = document.getElementById('problem');
    return Promise.all([get('/stats'), get('/upstreams'), get('/events')]).then(function (all) {
      document.getElementById('auth').hidden = true;
      problem.hidden = true;
      render(all[0], all[1], all[2]);
      return true;
    }, function (err) {
      if (err && err.auth) {
        // Polling on with a wrong token would only lock this address out (429).
        document.getElementById('auth').hidden = false;
        problem.textContent = 'Too many wrong tokens from this address: try again in ' + err.wait + ' s';
        problem.hidden = !err.wait;
        return false;
      }
      problem.textContent = 'Cannot reach the admin API: ' + (err && err.message ? err.message : String(err));
      problem.hidden = false;
      return true;
    });
  }

  document.getElementById('auth-form').addEventListener('submit', function (event) {
    event.preventDefault();
    token = document.getElementById('token').value;
    sessionStorage.setItem('l4proxy-token', token);
    if (timer === null) loop();
    else refresh();
  });

  function loop() {
    timer = undefined;
    refresh().then(function (going) { timer = going ? setTimeout(loop, 1000) : null; });
  }
  loop();
})();
`;

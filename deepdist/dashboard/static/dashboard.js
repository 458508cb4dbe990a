// deepdist dashboard: draws the metric history as inline SVG; polls /dashboard/data when live.
// Everything the server sends is shown with textContent or as SVG attributes, never as HTML.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var POLL_MS = 1000;
  var MIN_SPAN = 0.5;    // seconds: the shortest span a rate is taken over
  var QUIET_S = 5;       // seconds without a request before a running partition shows as quiet
  var W = 420, H = 150, PAD = {l: 52, r: 10, t: 8, b: 20};
  var config = JSON.parse(document.getElementById("deepdist-config").textContent);
  var state = {points: [], marks: [], generation: null, last: 0, data: null, stopped: false};
  // the curves users look for first; the rest follow by name
  var ORDER = ["loss", "log_likelihood", "perplexity", "elbo", "nodes", "births", "merges", "repairs",
               "alpha", "words_per_sec"];

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var k in attrs || {}) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svgEl(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) node.setAttribute(k, attrs[k]);
    return node;
  }
  function num(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(2) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 1 || a === 0) return String(+v.toFixed(3));
    return v.toPrecision(3);
  }
  function bytes(n) {
    var units = ["B", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
  }
  function clock(s) {
    s = Math.max(0, Math.round(s));
    var h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
    var mm = (h && m < 10 ? "0" : "") + m, ss = (sec < 10 ? "0" : "") + sec;
    return (h ? h + ":" : "") + mm + ":" + ss;
  }

  // -- series from the points ------------------------------------------------------------------
  function metricSeries(name) {
    var xs = [], ys = [];
    state.points.forEach(function (p) {
      if (p.metrics && name in p.metrics && p.metrics[name] !== null) { xs.push(p.t); ys.push(p.metrics[name]); }
    });
    return {xs: xs, ys: ys};
  }
  function rateSeries(key) {
    // over spans of at least half a sample interval: the extra samples taken as an epoch starts
    // and ends lie a few milliseconds apart, and a rate over those would be noise
    var xs = [], ys = [], pts = state.points, anchor = pts[0];
    for (var i = 1; i < pts.length; i++) {
      var dt = pts[i].t - anchor.t;
      if (dt >= MIN_SPAN) {
        xs.push(pts[i].t); ys.push(Math.max(0, pts[i][key] - anchor[key]) / dt); anchor = pts[i];
      }
    }
    return {xs: xs, ys: ys};
  }
  function plainSeries(key) {
    return {xs: state.points.map(function (p) { return p.t; }), ys: state.points.map(function (p) { return p[key]; })};
  }
  function metricNames() {
    var seen = {};
    state.points.forEach(function (p) { for (var k in p.metrics || {}) seen[k] = true; });
    return Object.keys(seen).sort(function (a, b) {
      var ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
      ia = ia < 0 ? 99 : ia; ib = ib < 0 ? 99 : ib;
      return ia - ib || (a < b ? -1 : a > b ? 1 : 0);
    });
  }

  // -- drawing -------------------------------------------------------------------------------------
  function lineChart(id, title, series, format) {
    format = format || num;
    var card = el("div", {"class": "card"});
    var head = el("h3");
    head.appendChild(el("span", {}, title));
    var lastText = series.map(function (s) { return s.ys.length ? format(s.ys[s.ys.length - 1]) : "–"; }).join(" / ");
    head.appendChild(el("span", {"class": "last"}, lastText));
    card.appendChild(head);
    if (series.length > 1) {
      var legend = el("div", {"class": "legend"});
      series.forEach(function (s, i) {
        var item = el("span", {}); item.appendChild(el("i", {"class": "s" + i})); item.appendChild(document.createTextNode(s.name));
        legend.appendChild(item);
      });
      card.appendChild(legend);
    }
    var count = series.reduce(function (n, s) { return n + s.ys.length; }, 0);
    var svg = svgEl("svg", {viewBox: "0 0 " + W + " " + H, "data-chart": id, "data-points": String(count),
                            role: "img", "aria-label": title});
    var xmax = 1, ymin = Infinity, ymax = -Infinity;
    series.forEach(function (s) {
      s.xs.forEach(function (x) { if (x > xmax) xmax = x; });
      s.ys.forEach(function (y) { if (y < ymin) ymin = y; if (y > ymax) ymax = y; });
    });
    if (state.points.length) xmax = Math.max(xmax, state.points[state.points.length - 1].t);
    if (!isFinite(ymin)) { ymin = 0; ymax = 1; }
    if (ymin === ymax) { var pad = Math.abs(ymin) * 0.05 || 1; ymin -= pad; ymax += pad; }
    // a loss that falls by orders of magnitude would lie flat on a linear axis after its first points
    var log = ymin > 0 && ymax / ymin > 100;
    var pw = W - PAD.l - PAD.r, ph = H - PAD.t - PAD.b;
    function X(x) { return PAD.l + pw * x / xmax; }
    function Y(y) {
      var f = log ? (Math.log(y) - Math.log(ymin)) / (Math.log(ymax) - Math.log(ymin)) : (y - ymin) / (ymax - ymin);
      return PAD.t + ph * (1 - f);
    }
    if (log) {
      svg.setAttribute("data-scale", "log");
      var note = svgEl("text", {x: W - PAD.r, y: PAD.t + 8, "text-anchor": "end"}); note.textContent = "log scale"; svg.appendChild(note);
    }
    svg.appendChild(svgEl("line", {"class": "axis", x1: PAD.l, y1: PAD.t + ph, x2: W - PAD.r, y2: PAD.t + ph}));
    svg.appendChild(svgEl("line", {"class": "axis", x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: PAD.t + ph}));
    [ymin, log ? Math.sqrt(ymin * ymax) : (ymin + ymax) / 2, ymax].forEach(function (v) {
      var t = svgEl("text", {x: PAD.l - 4, y: Y(v) + 3, "text-anchor": "end"}); t.textContent = format(v); svg.appendChild(t);
    });
    [0, xmax / 2, xmax].forEach(function (v, i) {
      var t = svgEl("text", {x: X(v), y: H - 5, "text-anchor": i === 0 ? "start" : i === 2 ? "end" : "middle"});
      t.textContent = clock(v); svg.appendChild(t);
    });
    state.marks.forEach(function (m) {
      if (m.start > 0 && m.start <= xmax) svg.appendChild(svgEl("line", {"class": "mark", x1: X(m.start), x2: X(m.start), y1: PAD.t, y2: PAD.t + ph}));
    });
    series.forEach(function (s, i) {
      if (!s.xs.length) return;
      var d = s.xs.map(function (x, j) { return (j ? "L" : "M") + X(x).toFixed(1) + " " + Y(s.ys[j]).toFixed(1); }).join("");
      svg.appendChild(svgEl("path", {"class": "line s" + i, d: d, "data-series": s.name}));
      if (s.xs.length <= 60) s.xs.forEach(function (x, j) {
        svg.appendChild(svgEl("circle", {"class": "s" + i, cx: X(x).toFixed(1), cy: Y(s.ys[j]).toFixed(1), r: 2}));
      });
    });
    if (!count) { var t = svgEl("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}); t.textContent = "no data yet"; svg.appendChild(t); }
    card.appendChild(svg);
    return card;
  }

  function histogram(id, title, counts) {
    var card = el("div", {"class": "card"});
    var head = el("h3"); head.appendChild(el("span", {}, title)); card.appendChild(head);
    var keys = Object.keys(counts || {}).sort(function (a, b) { return parseInt(a, 10) - parseInt(b, 10); });
    var total = keys.reduce(function (n, k) { return n + counts[k]; }, 0);
    head.appendChild(el("span", {"class": "last"}, total + " updates"));
    var svg = svgEl("svg", {viewBox: "0 0 " + W + " " + H, "data-chart": id, "data-points": String(keys.length), role: "img", "aria-label": title});
    var pw = W - PAD.l - PAD.r, ph = H - PAD.t - PAD.b, max = 1;
    keys.forEach(function (k) { if (counts[k] > max) max = counts[k]; });
    var bw = keys.length ? pw / keys.length : pw;
    keys.forEach(function (k, i) {
      var h = ph * counts[k] / max;
      var bar = svgEl("rect", {"class": "bar", x: (PAD.l + i * bw + 2).toFixed(1), y: (PAD.t + ph - h).toFixed(1),
                               width: Math.max(1, bw - 4).toFixed(1), height: h.toFixed(1), "data-bucket": k});
      var tip = svgEl("title"); tip.textContent = "staleness " + k + ": " + counts[k]; bar.appendChild(tip);
      svg.appendChild(bar);
      var t = svgEl("text", {x: PAD.l + (i + 0.5) * bw, y: H - 5, "text-anchor": "middle"}); t.textContent = k; svg.appendChild(t);
    });
    [0, max].forEach(function (v) {
      var t = svgEl("text", {x: PAD.l - 4, y: PAD.t + ph * (1 - v / max) + 3, "text-anchor": "end"}); t.textContent = num(v); svg.appendChild(t);
    });
    svg.appendChild(svgEl("line", {"class": "axis", x1: PAD.l, y1: PAD.t + ph, x2: W - PAD.r, y2: PAD.t + ph}));
    if (!keys.length) { var e = svgEl("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}); e.textContent = "no update applied yet"; svg.appendChild(e); }
    card.appendChild(svg);
    return card;
  }

  function table(id, columns, rows) {
    var t = el("table", {id: id});
    var head = el("tr");
    columns.forEach(function (c) { head.appendChild(el("th", {}, c.title)); });
    t.appendChild(head);
    rows.forEach(function (r) {
      var tr = el("tr", r._attrs || {});
      columns.forEach(function (c) {
        var td = el("td", {"class": c.key});
        var v = c.cell ? c.cell(r, td) : r[c.key];
        if (v !== undefined && v !== null && typeof v !== "object") td.textContent = v;
        else if (v && v.nodeType) td.appendChild(v);
        tr.appendChild(td);
      });
      t.appendChild(tr);
    });
    return t;
  }

  function progressBar(value) {
    var wrap = el("span", {"class": "bar-bg"}), fg = el("span", {"class": "bar-fg"});
    fg.style.width = Math.round(100 * Math.min(1, Math.max(0, value))) + "%";   // CSSOM: allowed by the CSP
    wrap.appendChild(fg);
    var cell = el("span"); cell.appendChild(wrap); cell.appendChild(document.createTextNode(" " + Math.round(100 * value) + "%"));
    return cell;
  }

  function summary(data) {
    var s = data.status || {}, dl = document.getElementById("summary");
    var mark = state.marks[state.marks.length - 1], m = s.metrics || {}, label = mark ? mark.label : "–";
    // tasks that run several epochs in one Spark job say which they are in (as on the progress line)
    if (m.epoch && m.epochs && m.epoch.count) label = "epoch " + Math.round(m.epoch.last) + "/" + Math.round(m.epochs.last);
    var items = [["version", s.version], ["epoch", label],
                 ["uptime", clock(s.uptime_seconds || 0)], ["updates", num(s.updates_applied) + " applied"],
                 ["rejected", num(s.updates_rejected)], ["in", bytes(s.bytes_in || 0)], ["out", bytes(s.bytes_out || 0)],
                 ["queue", s.queue_depth]];
    var parts = data.partitions || [], job = parts.reduce(function (m, p) { return Math.max(m, p.epoch); }, 0);
    var current = parts.filter(function (p) { return p.epoch === job; });
    if (current.length) items.push(["partitions done", current.filter(function (p) { return p.state === "done"; }).length + "/" + current.length]);
    var retries = parts.reduce(function (n, p) { return n + p.retries; }, 0);
    items.push(["retries", retries]);
    dl.replaceChildren();
    items.forEach(function (kv) {
      var d = el("div", {"data-key": kv[0]}); d.appendChild(el("dt", {}, kv[0])); d.appendChild(el("dd", {}, kv[1] === undefined ? "–" : String(kv[1])));
      dl.appendChild(d);
    });
  }

  function render() {
    var data = state.data;
    if (!data) return;
    summary(data);
    var pill = document.getElementById("state");
    if (!state.stopped) { pill.textContent = data.live ? "live" : "finished"; pill.className = "pill " + (data.live ? "live" : "done"); }
    if (!config.live) { pill.textContent = "report"; pill.className = "pill done"; }

    var metrics = document.getElementById("metrics");
    metrics.replaceChildren();
    var names = metricNames();
    names.forEach(function (name) {
      var s = metricSeries(name); s.name = name;
      metrics.appendChild(lineChart("metric:" + name, name, [s]));
    });
    if (!names.length) metrics.appendChild(el("div", {"class": "empty"}, "No metric reported yet (deepdist.report(loss=...) in a gradient adds one)."));

    var server = document.getElementById("server");
    server.replaceChildren();
    var applied = rateSeries("applied"); applied.name = "applied";
    var received = rateSeries("received"); received.name = "received";
    server.appendChild(lineChart("updates_per_second", "updates / s", [applied, received]));
    var bin = rateSeries("bytes_in"); bin.name = "in";
    var bout = rateSeries("bytes_out"); bout.name = "out";
    server.appendChild(lineChart("bytes_per_second", "bytes / s", [bin, bout], function (v) { return bytes(v); }));
    var queue = plainSeries("queue"); queue.name = "queue";
    server.appendChild(lineChart("queue_depth", "queue depth", [queue]));
    server.appendChild(histogram("staleness", "staleness (versions behind)", (data.status || {}).staleness_histogram));

    var now = data.now;
    var parts = (data.partitions || []).map(function (p) {
      return Object.assign({_attrs: {"data-partition": String(p.partition), "class": p.retries ? "retried" : ""}}, p);
    });
    var ptable = table("partitions-table", [
      {title: "partition", key: "partition"}, {title: "job", key: "epoch"}, {title: "task attempt", key: "attempt"},
      {title: "retries", key: "retries"}, {title: "pushes", key: "pushes"},
      {title: "progress", key: "progress", cell: function (r) { return r.progress === null ? r.epoch_pushes + " pushes" : progressBar(r.progress); }},
      {title: "last contact", key: "last_contact", cell: function (r) { return clock(now - r.last_contact) + " ago"; }},
      {title: "state", key: "state", cell: function (r, td) {
        var s = r.state === "running" && now - r.last_contact > QUIET_S ? "quiet" : r.state;
        td.className = "state state-" + s; return s;
      }}], parts);
    var pbox = document.getElementById("partitions");
    pbox.replaceChildren(parts.length ? ptable : el("div", {"class": "empty"}, "No task has pushed yet."));
    if (data.partitions_total > parts.length) {
      pbox.appendChild(el("div", {"class": "empty"}, "Showing " + parts.length + " of " + data.partitions_total +
                          " partitions: the retried and the longest silent first."));
    }

    var params = data.params || [];
    var total = params.reduce(function (n, p) { return n + p.bytes; }, 0);
    var rows = params.map(function (p) { return {name: p.name, shape: "(" + p.shape.join(", ") + ")", dtype: p.dtype, memory: bytes(p.bytes)}; });
    rows.push({name: "total", shape: "", dtype: "", memory: bytes(total)});
    document.getElementById("params").replaceChildren(table("params-table", [
      {title: "name", key: "name"}, {title: "shape", key: "shape"}, {title: "dtype", key: "dtype"}, {title: "memory", key: "memory"}], rows));

    var started = new Date((data.history || {}).started * 1000);
    document.getElementById("footer").textContent = (config.live ? "live, polling every " + POLL_MS / 1000 + " s" : "report written " + new Date(data.now * 1000).toISOString())
      + " · training started " + started.toISOString() + " · " + state.points.length + " points";
  }

  function absorb(data) {
    var h = data.history;
    if (h.reset) state.points = h.points; else state.points = state.points.concat(h.points);
    if (h.reset || !h.marks.length) state.marks = h.reset ? h.marks : state.marks;
    else state.marks = state.marks.filter(function (m) { return m.i < h.marks[0].i; }).concat(h.marks);
    state.generation = h.generation;
    state.last = h.last;
    state.data = data;
    render();
  }

  function banner(text) {
    var b = document.getElementById("banner");
    b.textContent = text; b.hidden = false;
  }

  function poll() {
    if (state.stopped) return;
    var lastMark = state.marks.length ? state.marks[state.marks.length - 1].i : 0;
    var url = "dashboard/data?after=" + state.last + "&mark=" + lastMark +
              (state.generation === null ? "" : "&generation=" + state.generation);
    fetch(url, {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (r.status === 401 || r.status === 403) {
        state.stopped = true;
        banner("This session is no longer valid: open the dashboard with a new link (dd.dashboard_url()).");
        return null;
      }
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (data) {
      if (!data) return;
      absorb(data);
      if (!data.live) { state.stopped = true; return; }
      setTimeout(poll, POLL_MS);
    }).catch(function () {
      state.stopped = true;
      var pill = document.getElementById("state"); pill.textContent = "server gone"; pill.className = "pill lost";
      banner("The model server stopped answering (training has ended?). The page shows what it had; dd.save_report(path) writes it all.");
    });
  }

  if (config.live) poll(); else absorb(config.data);
})();

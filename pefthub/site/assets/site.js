// pefthub leaderboard: table sorting and filtering; on run pages, samples loaded from the site's own
// items file on demand (the only request the site makes, same origin). No dependencies.
(function () {
  "use strict";

  function sortValue(cell, numeric) {
    var raw = cell.getAttribute("data-sort");
    if (raw === null) raw = cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    if (raw === "") return null;
    var n = parseFloat(raw);
    return isNaN(n) ? null : n;
  }

  function sortTable(table, index, th) {
    var numeric = th.getAttribute("data-type") === "num";
    var current = th.getAttribute("aria-sort");
    var first = numeric && th.getAttribute("data-better") !== "low" ? "descending" : "ascending";
    var dir = current === null || current === "none" ? first : (current === "ascending" ? "descending" : "ascending");
    var sign = dir === "ascending" ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortValue(a.cells[index], numeric), y = sortValue(b.cells[index], numeric);
      if (x === y) return 0;
      if (x === null) return 1;   // missing values last in both directions
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sign;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) { cell.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", dir);
  }

  function applyFilters(table) {
    var text = document.querySelector('.table-filter[data-table="' + table.id + '"]');
    var trainer = document.querySelector('.trainer-filter[data-table="' + table.id + '"]');
    var needle = text ? text.value.trim().toLowerCase() : "";
    var wanted = trainer ? trainer.value : "";
    var healthControl = document.querySelector('.health-filter[data-table="' + table.id + '"]');
    var health = healthControl ? healthControl.value : "";
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      if (row.classList.contains("ref")) { row.hidden = false; return; }  // the base model always shows
      var ok = (!needle || row.textContent.toLowerCase().indexOf(needle) !== -1) &&
               (!wanted || row.getAttribute("data-trainer") === wanted) &&
               healthOk(row.getAttribute("data-flags") || "", health);
      row.hidden = !ok;
    });
  }

  function healthOk(flags, wanted) {
    if (wanted === "hide") return flags === "";
    if (wanted === "only") return flags !== "";
    return true;
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      var button = th.querySelector("button");
      if (!button) return;
      th.setAttribute("aria-sort", "none");
      button.addEventListener("click", function () { sortTable(table, index, th); });
    });
  });

  document.querySelectorAll(".table-filter, .trainer-filter, .health-filter").forEach(function (control) {
    var table = document.getElementById(control.getAttribute("data-table"));
    if (!table) return;
    control.addEventListener("input", function () { applyFilters(table); });
    control.addEventListener("change", function () { applyFilters(table); });
  });

  // ---- run pages: training curves, drawn from the coordinates and labels pefthub/site/plots.py
  // computed (curve_spec); every string goes in as text.
  var SVGNS = "http://www.w3.org/2000/svg";
  function svgEl(name, attrs, text) {
    var e = document.createElementNS(SVGNS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function ticks(text) {
    return (text || "").split("|").filter(function (t) { return t; }).map(function (t) {
      var i = t.indexOf(":");
      return [parseFloat(t.slice(0, i)), t.slice(i + 1)];
    });
  }
  function points(text) {
    return (text || "").split(" ").filter(function (p) { return p; }).map(function (p) { return p.split(",").map(Number); });
  }

  document.querySelectorAll(".curves[data-frame]").forEach(function (box) {
    var f = box.getAttribute("data-frame").split(" ").map(Number), colour = box.getAttribute("data-colour");
    var w = f[0], h = f[1], left = f[2], top = f[3], right = f[4], bottom = f[5];
    box.querySelectorAll(".curve-data").forEach(function (holder) {
      var chart = svgEl("svg", { xmlns: SVGNS, viewBox: "0 0 " + w + " " + h, width: w, height: h,
                                 "class": "chart curve-plot", role: "img", "aria-label": holder.getAttribute("data-label") });
      var xs = ticks(holder.getAttribute("data-x-ticks")), ys = ticks(holder.getAttribute("data-y-ticks"));
      chart.appendChild(svgEl("rect", { x: left, y: top, width: right - left, height: bottom - top, "class": "plot-bg" }));
      var grid = ys.map(function (t) { return "M" + left + " " + t[0] + "H" + right; }).join("") +
                 xs.map(function (t) { return "M" + t[0] + " " + top + "V" + bottom; }).join("");
      if (grid) chart.appendChild(svgEl("path", { d: grid, fill: "none", "class": "grid" }));
      var yLabels = svgEl("g", { "class": "tick", "text-anchor": "end" });
      ys.forEach(function (t) { yLabels.appendChild(svgEl("text", { x: left - 8, y: t[0] + 4 }, t[1])); });
      var xLabels = svgEl("g", { "class": "tick", "text-anchor": "middle" });
      xs.forEach(function (t) { xLabels.appendChild(svgEl("text", { x: t[0], y: bottom + 18 }, t[1])); });
      chart.appendChild(yLabels);
      chart.appendChild(xLabels);
      chart.appendChild(svgEl("path", { d: "M" + left + " " + top + "V" + bottom + "H" + right, fill: "none", "class": "axis" }));
      chart.appendChild(svgEl("text", { x: (left + right) / 2, y: bottom + 40, "class": "axis-title", "text-anchor": "middle" }, "Optimizer step"));
      var cy = (top + bottom) / 2;
      chart.appendChild(svgEl("text", { x: 16, y: cy, "class": "axis-title", "text-anchor": "middle",
                                        transform: "rotate(-90 16 " + cy + ")" }, holder.getAttribute("data-y-title")));
      var band = holder.getAttribute("data-band");
      if (band) chart.appendChild(svgEl("polygon", { points: band, fill: colour, "class": "band" }));
      var series = svgEl("g", { "class": "pt" });
      series.appendChild(svgEl("title", {}, holder.getAttribute("data-tip")));
      (holder.getAttribute("data-line") || "").split(";").filter(function (s) { return s; }).forEach(function (segment) {
        series.appendChild(svgEl("polyline", { points: segment, fill: "none", stroke: colour, "class": "series" }));
      });
      var marks = points(holder.getAttribute("data-marks"));
      if (marks.length) {
        series.appendChild(svgEl("path", { d: marks.map(function (p) { return "M" + p[0] + " " + p[1] + "h0"; }).join(""),
                                           fill: "none", stroke: colour, "class": "marks" }));
      }
      chart.appendChild(series);
      holder.appendChild(chart);
    });
  });

  // ---- run pages: samples and downloads, on demand, from the suite's items file --------------------
  // data/<suite>/items.jsonl.gz is a chain of gzip members (pefthub/site/items.py has the layout); the page knows
  // the byte ranges of its run's member and of its items table and fetches only those (a host that
  // ignores Range sends the whole file once, which is then sliced).
  var whole = {};

  function fetchRange(url, span) {
    if (whole[url]) return whole[url].then(function (b) { return b.slice(span[0], span[0] + span[1]); });
    return fetch(url, { headers: { Range: "bytes=" + span[0] + "-" + (span[0] + span[1] - 1) } }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status + " for " + url);
      if (r.status === 206) return r.arrayBuffer();
      whole[url] = r.arrayBuffer();
      return whole[url].then(function (b) { return b.slice(span[0], span[0] + span[1]); });
    });
  }

  function jsonLines(buffer) {
    var head = new Uint8Array(buffer, 0, Math.min(2, buffer.byteLength));
    if (head[0] !== 0x1f || head[1] !== 0x8b) throw new Error("the items file did not arrive as gzip bytes");
    var stream = new Blob([buffer]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text().then(function (text) {
      return text.split("\n").filter(function (line) { return line; }).map(function (line) { return JSON.parse(line); });
    });
  }

  function span(text) {
    var parts = (text || "").split(" ");
    return parts.length === 2 ? [parseInt(parts[0], 10), parseInt(parts[1], 10)] : null;
  }

  function itemKey(r) { return JSON.stringify([r.split === undefined ? null : r.split, r.id]); }

  var loading = null;
  function loadRun(section) {
    if (loading) return loading;
    if (typeof DecompressionStream === "undefined") return Promise.reject(new Error("this browser cannot decompress gzip"));
    var url = section.getAttribute("data-src"), run = span(section.getAttribute("data-run"));
    var table = span(section.getAttribute("data-table"));
    loading = fetchRange(url, run).then(jsonLines).then(function (lines) {
      var out = { result: lines[0].result, records: lines[1].records };
      if (!table) return out;
      return fetchRange(url, table).then(jsonLines).then(function (tableLines) {
        var byKey = {};  // [split, id, prompt, gold] per item
        tableLines[0].items.forEach(function (t) { byKey[itemKey({ split: t[0], id: t[1] })] = t; });
        out.records.forEach(function (r) {
          var t = byKey[itemKey(r)];
          if (t) { r.prompt = t[2]; r.gold = t[3]; }
        });
        return out;
      });
    });
    loading.catch(function () { loading = null; });
    return loading;
  }

  function failure(error) {
    var why = error && error.message ? error.message : String(error);
    if (location.protocol === "file:") why = "a page opened from disk cannot read the items file; open the site through a web server (e.g. pefthub site serve)";
    return "Could not load the completions: " + why + ".";
  }

  function shown(value) {
    if (value === null || value === undefined) return "\u2014";
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  function el(tag, cls, content) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined) e.textContent = content;  // text only: records never become markup
    return e;
  }

  function sampleItem(r) {
    var correct = r.correct === true;
    var li = el("li", "sample " + (correct ? "correct" : "wrong"));
    li.setAttribute("data-correct", correct ? "1" : "0");
    var mark = el("span", "mark", correct ? "\u2713" : "\u2717");
    mark.title = correct ? "correct" : "wrong";
    var answers = el("span", "answers");
    answers.append("extracted ", el("code", null, shown(r.extracted)), " \u00b7 gold ", el("code", null, shown(r.gold)));
    var summary = el("summary");
    summary.append(mark, el("span", "sid", shown(r.split) + " \u00b7 " + shown(r.id)), answers);
    var body = el("div", "sample-body");
    body.append(el("h4", null, "Prompt"), el("pre", "text", shown(r.prompt)),
                el("h4", null, "Completion"), el("pre", "text", shown(r.completion)));
    var details = el("details");
    details.append(summary, body);
    li.append(details);
    return li;
  }

  var SPLITS = ["test", "validation"];
  function splitRank(r) { var i = SPLITS.indexOf(r.split); return i === -1 ? SPLITS.length : i; }

  document.querySelectorAll("section.items").forEach(function (section) {
    var button = section.querySelector(".load-items"), status = section.querySelector(".items-status");
    var controls = section.querySelector(".sample-controls"), list = section.querySelector("ol.samples");
    if (!button || !controls || !list) return;
    var limit = parseInt(section.getAttribute("data-limit"), 10);
    var records = [], rendered = 0, more = controls.querySelector(".show-more");

    function renderUpTo(n) {
      var active = controls.querySelector("button[data-show].active");
      var show = active ? active.getAttribute("data-show") : "all";
      for (; rendered < Math.min(n, records.length); rendered++) {
        var li = sampleItem(records[rendered]);
        var ok = li.getAttribute("data-correct") === "1";
        li.hidden = show === "correct" ? !ok : show === "wrong" ? ok : false;
        list.appendChild(li);
      }
      more.hidden = rendered >= records.length;
      more.textContent = "Show all " + records.length + " (first " + rendered + " shown)";
    }

    button.addEventListener("click", function () {
      button.disabled = true;
      status.textContent = "Loading\u2026";
      loadRun(section).then(function (data) {
        records = data.records.slice().sort(function (a, b) { return splitRank(a) - splitRank(b); });  // stable
        var correct = records.filter(function (r) { return r.correct === true; }).length;
        controls.querySelector('[data-count="all"]').textContent = records.length;
        controls.querySelector('[data-count="correct"]').textContent = correct;
        controls.querySelector('[data-count="wrong"]').textContent = records.length - correct;
        controls.hidden = false;
        button.hidden = true;
        status.textContent = "";
        renderUpTo(isNaN(limit) || limit < 0 ? records.length : limit);
      }, function (error) {
        button.disabled = false;
        status.textContent = failure(error);
      });
    });

    more.addEventListener("click", function () { renderUpTo(records.length); });

    controls.querySelectorAll("button[data-show]").forEach(function (seg) {
      seg.addEventListener("click", function () {
        var show = seg.getAttribute("data-show");
        controls.querySelectorAll("button[data-show]").forEach(function (b) { b.classList.toggle("active", b === seg); });
        renderUpTo(records.length);  // a filter applies to every record
        Array.prototype.forEach.call(list.children, function (item) {
          var ok = item.getAttribute("data-correct") === "1";
          item.hidden = show === "correct" ? !ok : show === "wrong" ? ok : false;
        });
      });
    });
  });

  document.querySelectorAll("a.item-download").forEach(function (link) {
    link.addEventListener("click", function (event) {
      var section = document.querySelector("section.items");
      if (!section) return;
      event.preventDefault();
      var kind = link.getAttribute("data-kind"), rid = link.getAttribute("data-run-id");
      loadRun(section).then(function (data) {
        var text, name;
        if (kind === "result") {
          text = JSON.stringify(data.result, null, 1) + "\n";
          name = rid + ".json";
        } else {
          text = data.records.map(function (r) { return JSON.stringify(r) + "\n"; }).join("");
          name = rid + ".samples.jsonl";
        }
        var a = document.createElement("a");
        a.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
        a.download = name;
        document.body.appendChild(a);
        a.click();
        a.remove();
      }, function (error) {
        var status = section.querySelector(".items-status");
        if (status) status.textContent = failure(error);
      });
    });
  });
})();

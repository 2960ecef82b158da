// pefthub leaderboard: table sorting and filtering, sample filtering. No dependencies, no network.
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

  document.querySelectorAll(".sample-controls").forEach(function (controls) {
    var list = document.getElementById(controls.getAttribute("data-target"));
    if (!list) return;
    controls.querySelectorAll("button[data-show]").forEach(function (button) {
      button.addEventListener("click", function () {
        var show = button.getAttribute("data-show");
        controls.querySelectorAll("button[data-show]").forEach(function (b) { b.classList.toggle("active", b === button); });
        Array.prototype.forEach.call(list.children, function (item) {
          var correct = item.getAttribute("data-correct") === "1";
          item.hidden = show === "correct" ? !correct : show === "wrong" ? correct : false;
        });
      });
    });
  });
})();

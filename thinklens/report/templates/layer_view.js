(function () {
  "use strict";
  var el = document.getElementById("lv-data");
  if (!el) { return; }
  var data = JSON.parse(el.textContent);
  var slider = document.getElementById("lv-layer"), label = document.getElementById("lv-layer-label");
  var pairSel = document.getElementById("lv-pair"), summary = document.getElementById("lv-summary");
  var heads = document.getElementById("lv-heads"), nldCanvas = document.getElementById("lv-nld");
  var play = document.getElementById("lv-play");
  var P = data.patching;
  slider.max = Math.max(0, data.n_layers - 1);
  if (P) {
    P.pairs.forEach(function (p, i) {
      var o = document.createElement("option"); o.value = String(i); o.textContent = p.id; pairSel.appendChild(o);
    });
  } else { pairSel.disabled = true; }
  var rfh = {};
  (data.rfh || []).forEach(function (lh) { rfh[lh[0] + ":" + lh[1]] = true; });

  function axes(ctx, w, h, m, ymin, ymax, ylabel) {
    ctx.strokeStyle = "#8a93a3"; ctx.lineWidth = 1; ctx.beginPath();
    ctx.moveTo(m.l, m.t); ctx.lineTo(m.l, h - m.b); ctx.lineTo(w - m.r, h - m.b); ctx.stroke();
    ctx.fillStyle = "#394150"; ctx.font = "11px sans-serif"; ctx.textAlign = "right";
    for (var k = 0; k <= 4; k++) {
      var v = ymin + (ymax - ymin) * k / 4, y = h - m.b - (h - m.t - m.b) * k / 4;
      ctx.fillText(v.toFixed(2), m.l - 4, y + 4);
      ctx.strokeStyle = "#eef0f3"; ctx.beginPath(); ctx.moveTo(m.l + 1, y); ctx.lineTo(w - m.r, y); ctx.stroke();
    }
    ctx.save(); ctx.translate(12, (h - m.b + m.t) / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center";
    ctx.fillText(ylabel, 0, 0); ctx.restore();
  }

  function drawHeads(layer) {
    var ctx = heads.getContext("2d"), w = heads.width, h = heads.height, m = {l: 48, r: 10, t: 14, b: 30};
    ctx.clearRect(0, 0, w, h); ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
    if (!data.a2r) { ctx.fillStyle = "#8a93a3"; ctx.fillText("no attention scores in this run", m.l, h / 2); return ""; }
    var row = data.a2r[layer] || [], ymax = data.a2r_max || 1, n = row.length, bw = (w - m.l - m.r) / n;
    axes(ctx, w, h, m, 0, ymax, "a2r");
    var best = -1, bestV = -1;
    for (var i = 0; i < n; i++) {
      var v = row[i] === null ? 0 : row[i], bh = (h - m.t - m.b) * v / ymax;
      ctx.fillStyle = rfh[layer + ":" + i] ? "#e8730c" : "#3b6fd8";
      ctx.fillRect(m.l + i * bw + bw * 0.15, h - m.b - bh, bw * 0.7, bh);
      ctx.fillStyle = "#394150"; ctx.textAlign = "center";
      if (n <= 32 || i % 4 === 0) { ctx.fillText(String(i), m.l + i * bw + bw / 2, h - m.b + 13); }
      if (v > bestV) { bestV = v; best = i; }
    }
    ctx.fillText("head", (w + m.l) / 2, h - 3);
    return "strongest head L" + layer + "H" + best + " (a2r " + bestV.toFixed(3) + ")";
  }

  function drawNld(layer) {
    var ctx = nldCanvas.getContext("2d"), w = nldCanvas.width, h = nldCanvas.height;
    var m = {l: 48, r: 10, t: 14, b: 30};
    ctx.clearRect(0, 0, w, h); ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
    if (!P) { ctx.fillStyle = "#8a93a3"; ctx.fillText("no patching results in this run", m.l, h / 2); return ""; }
    var li = P.layers.indexOf(layer), pair = P.pairs[Number(pairSel.value) || 0];
    if (li < 0) { ctx.fillStyle = "#8a93a3"; ctx.fillText("layer " + layer + " was not patched", m.l, h / 2);
      return "layer not patched"; }
    var row = pair.nld[li], n = row.length, x0 = m.l, pw = (w - m.l - m.r) / Math.max(1, n - 1);
    var ymin = -0.25, ymax = 1.25;
    axes(ctx, w, h, m, ymin, ymax, "NLD");
    function Y(v) { return h - m.b - (h - m.t - m.b) * (v - ymin) / (ymax - ymin); }
    [pair.flip_index, pair.final_index].forEach(function (idx, k) {
      if (idx === null || idx === undefined) { return; }
      ctx.strokeStyle = k === 0 ? "#e8730c" : "#18794e"; ctx.setLineDash([4, 3]); ctx.beginPath();
      ctx.moveTo(x0 + idx * pw, m.t); ctx.lineTo(x0 + idx * pw, h - m.b); ctx.stroke(); ctx.setLineDash([]);
    });
    ctx.strokeStyle = "#3b6fd8"; ctx.lineWidth = 1.5; ctx.beginPath();
    var started = false;
    for (var i = 0; i < n; i++) {
      if (row[i] === null) { continue; }
      var v = Math.max(ymin, Math.min(ymax, row[i]));
      if (!started) { ctx.moveTo(x0 + i * pw, Y(v)); started = true; } else { ctx.lineTo(x0 + i * pw, Y(v)); }
    }
    ctx.stroke(); ctx.lineWidth = 1; ctx.fillStyle = "#394150"; ctx.textAlign = "center";
    var every = Math.max(1, Math.ceil(n / 40));
    for (var t = 0; t < n; t += every) {  // token strings under their positions (newlines shown as \u21b5)
      var s = String(pair.tokens[t] === undefined ? "" : pair.tokens[t]).replace(/\n/g, "\u21b5").slice(0, 6);
      ctx.fillText(s, x0 + t * pw, h - m.b + 12);
      if (row[t] !== null) { ctx.beginPath(); ctx.arc(x0 + t * pw, Y(Math.max(ymin, Math.min(ymax, row[t]))), 2, 0,
        2 * Math.PI); ctx.fill(); }
    }
    ctx.fillText("token position (orange: reasoning's answer token, green: final answer)", (w + m.l) / 2, h - 3);
    var fi = pair.flip_index, val = (fi !== null && fi !== undefined) ? row[fi] : null;
    return "pair " + pair.id + ": NLD at the answer-flip token " +
      (val === null || val === undefined ? "n/a" : val.toFixed(3)) +
      (fi !== null && fi !== undefined ? " (\u201c" + pair.tokens[fi] + "\u201d)" : "");
  }

  function update() {
    var layer = Number(slider.value);
    label.textContent = "layer " + layer + " / " + (data.n_layers - 1);
    var a = drawHeads(layer), b = drawNld(layer);
    summary.textContent = [a, b].filter(Boolean).join(" \u2014 ");
    document.body.setAttribute("data-lv-layer", String(layer));
  }
  var timer = null;
  play.addEventListener("click", function () {
    if (timer) { clearInterval(timer); timer = null; play.innerHTML = "&#9654; play"; return; }
    play.innerHTML = "&#10074;&#10074; pause";
    timer = setInterval(function () {
      slider.value = String((Number(slider.value) + 1) % (Number(slider.max) + 1)); update();
    }, 700);
  });
  slider.addEventListener("input", update);
  pairSel.addEventListener("change", update);
  window.thinklensLayerView = {update: update, data: data};
  update();
})();

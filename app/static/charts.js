// The viewer's charts (uPlot): a value over time, mean ± stDev over time, a histogram;
// and their CSV. Times are unix seconds; null is a gap (a masked or cloudy date).
"use strict";

const Charts = (() => {
  const COLOURS = ["#2a6fdb", "#d0342c", "#2e9d4a", "#8a4fd0"];
  const plots = new Map(); // container id -> uPlot

  function width(container) {
    return Math.max(200, (container.clientWidth || 320) - 8);
  }

  // A vertical line at the selected date (u.selectedTime, unix seconds).
  const marker = {
    hooks: {
      draw: [
        (u) => {
          if (u.selectedTime == null) return;
          const x = u.valToPos(u.selectedTime, "x", true);
          if (!(x >= u.bbox.left && x <= u.bbox.left + u.bbox.width)) return;
          const ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = "#999";
          ctx.setLineDash([4, 4]);
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
          ctx.restore();
        },
      ],
    },
  };

  function place(id, options, data, selectedTime) {
    const container = document.getElementById(id);
    if (plots.has(id)) plots.get(id).destroy();
    container.textContent = "";
    container.classList.remove("message");
    const plot = new uPlot({ width: width(container), height: 170, ...options }, data, container);
    plot.selectedTime = selectedTime;
    plot.redraw(false);
    plots.set(id, plot);
    return plot;
  }

  function dateOf(seconds) {
    return new Date(seconds * 1000).toISOString().slice(0, 10);
  }

  const dateAxis = { values: (u, ticks) => ticks.map((t) => dateOf(t).slice(5)) };

  /** The value of each band over time; null values are gaps, each value a dot. */
  function series(id, times, bands, names, selectedTime) {
    const options = {
      scales: { x: { time: true } },
      axes: [dateAxis, { size: 44 }],
      series: [
        { value: (u, v) => (v == null ? "" : dateOf(v)) },
        ...names.map((name, i) => ({
          label: name,
          stroke: COLOURS[i % COLOURS.length],
          width: 1.5,
          spanGaps: false,
          points: { show: true, size: 7 },
          value: (u, v, si, idx) => (idx == null ? "" : v == null ? "masked" : v.toFixed(3)),
        })),
      ],
      plugins: [marker],
    };
    return place(id, options, [times, ...bands], selectedTime);
  }

  /** Mean with a ± stDev band over time. */
  function meanBand(id, times, mean, stDev, selectedTime) {
    const upper = mean.map((m, i) => (m == null ? null : m + stDev[i]));
    const lower = mean.map((m, i) => (m == null ? null : m - stDev[i]));
    const options = {
      scales: { x: { time: true } },
      axes: [dateAxis, { size: 44 }],
      series: [
        { value: (u, v) => (v == null ? "" : dateOf(v)) },
        {
          label: "mean",
          stroke: COLOURS[2],
          width: 2,
          points: { show: true, size: 7 },
          value: (u, v, si, idx) => (idx == null ? "" : v == null ? "no data" : v.toFixed(3)),
        },
        { label: "+stDev", stroke: "rgba(46,157,74,0.4)", points: { show: false } },
        { label: "-stDev", stroke: "rgba(46,157,74,0.4)", points: { show: false } },
      ],
      bands: [{ series: [2, 3], fill: "rgba(46,157,74,0.15)" }],
      plugins: [marker],
    };
    return place(id, options, [times, mean, upper, lower], selectedTime);
  }

  /** Bars of counts per bin; centres and counts. */
  function histogram(id, centres, counts, binWidth) {
    const options = {
      scales: { x: { time: false, range: (u, min, max) => [min - binWidth / 2, max + binWidth / 2] } },
      axes: [{}, { size: 44 }],
      series: [
        { label: "bin", value: (u, v) => (v == null ? "" : v.toFixed(3)) },
        {
          label: "pixels",
          stroke: COLOURS[0],
          fill: "rgba(42,111,219,0.4)",
          paths: uPlot.paths.bars({ size: [0.95, Infinity] }),
          points: { show: false },
        },
      ],
    };
    return place(id, options, [centres, counts]);
  }

  /** Move the selected-date marker on every time chart. */
  function select(selectedTime) {
    for (const plot of plots.values()) {
      plot.selectedTime = selectedTime;
      plot.redraw(false);
    }
  }

  function clear(id) {
    if (plots.has(id)) plots.get(id).destroy();
    plots.delete(id);
  }

  /** A CSV file of rows (arrays) under a header, saved as `name`. */
  function download(name, header, rows) {
    const cell = (v) => (v == null ? "" : /[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
    const text = [header, ...rows].map((row) => row.map(cell).join(",")).join("\n") + "\n";
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    return text;
  }

  return { series, meanBand, histogram, select, clear, download, dateOf };
})();

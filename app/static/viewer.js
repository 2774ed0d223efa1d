// terratiler's viewer: the catalog's scenes and the registered searches on a Leaflet map,
// a time slider over their dates, charts of a point and of a field over time, a legend,
// animations and a permalink. Every layer comes from the service's own TileJSON; URLs are
// relative to this page, so the viewer works behind a path prefix too.
//
// What the page shows is also in `window.terratiler` (state, lastPoint, lastField,
// lastAnimation, legend): the numbers behind each chart, for scripts and tests.
"use strict";

const map = L.map("map", { worldCopyJump: true }).setView([20, 0], 2);
const presetSelect = document.getElementById("preset");
const maskBox = document.getElementById("mask");
const statusLine = document.getElementById("status");
const slider = document.getElementById("time");
const dateOutput = document.getElementById("date");
const legendBox = document.getElementById("legend");

// Scene classification classes (Sentinel-2 L2A SCL), for the SCL legend.
const SCL_CLASSES = [
  "no data", "saturated or defective", "dark area", "cloud shadow", "vegetation",
  "not vegetated", "water", "unclassified", "cloud, medium probability",
  "cloud, high probability", "thin cirrus", "snow or ice",
];
const NDVI = "(nir-red)/(nir+red)";
const HISTOGRAM = { nBins: 24, lowEdge: -0.2, highEdge: 1.0 };
const ANIMATION_MAX_SIDE = 512;
const MAX_STAT_DAYS = 400; // the service's stats_max_intervals at one interval per day

const state = {
  collection: null, // the catalog's collection (the first of /catalog/collections)
  extent: null, // its [west, south, east, north]
  scenes: [], // the catalog's scenes, oldest first: {id, collection, datetime, cloud, geometry}
  mode: "scene", // "scene": the slider walks the catalog's scenes; "search": a search's dates
  search: null, // the registered search shown (its record)
  dates: [], // the slider's scenes, oldest first (the catalog's or the search's)
  index: 0, // slider position; in search mode 0 is the whole mosaic, i is dates[i - 1]
  point: null, // [lon, lat] of the point chart
  field: null, // {name, geometry, key}: key "<layer>:<identifier>" for picked fields
};
const terratiler = (window.terratiler = { state, lastPoint: null, lastField: null, lastAnimation: null, legend: null });

let tiles = null; // the tile layer shown
let footprints = null; // the scenes' outlines
let selectedOutline = null; // the selected field's outline
let drawn = null; // the last polygon drawn
const vectorFeatures = new Map(); // "<layer>:<identifier>" -> GeoJSON feature
let catalogSearch = null; // Promise of the id of the search of every listed scene

function say(text) {
  statusLine.textContent = text;
}

async function detail(response) {
  try {
    return JSON.stringify((await response.json()).detail);
  } catch (error) {
    return response.statusText;
  }
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  if (!response.ok) throw new Error(`${response.status}: ${await detail(response)}`);
  return response.json();
}

function seconds(datetime) {
  return Date.parse(datetime) / 1000;
}

// ------------------------------------------------------------------ the layer and what is shown

function layerParams() {
  const params = new URLSearchParams();
  if (presetSelect.value) params.set("preset", presetSelect.value);
  params.set("mask", maskBox.checked ? "scl-clear" : "none");
  return params;
}

function current() {
  // The scene the slider is on, or null for a search's whole mosaic.
  if (state.mode === "search") return state.index === 0 ? null : state.dates[state.index - 1];
  return state.dates[state.index] || null;
}

function tileBase() {
  const scene = current();
  if (scene) return `collections/${encodeURIComponent(scene.collection)}/items/${encodeURIComponent(scene.id)}`;
  return state.search ? `searches/${state.search.id}` : null;
}

// The latest request of each kind: an older answer arriving later (the slider moved on,
// another click) is dropped.
const tickets = { layer: 0, point: 0, field: 0 };

async function showLayer(base, fit) {
  const ticket = ++tickets.layer;
  // Leaflet lays out 256 px tiles.
  const response = await fetch(`${base}/WebMercatorQuad/tilejson.json?tilesize=256&${layerParams()}`);
  if (ticket !== tickets.layer) return;
  if (!response.ok) {
    say(`${response.status}: ${await detail(response)}`);
    return;
  }
  const tilejson = await response.json();
  if (ticket !== tickets.layer) return;
  const [west, south, east, north] = tilejson.bounds;
  const bounds = L.latLngBounds([south, west], [north, east]);
  if (tiles) map.removeLayer(tiles);
  // No maxNativeZoom: past the TileJSON's maxzoom the service's own tiles are asked for,
  // resampled from the full-resolution data. Leaflet's overzoom (maxzoom tiles stretched
  // by the browser) smoothed each tile on its own, so every tile edge showed as a step,
  // and the maxzoom tiles are coarser than the 10 m data (tests/test_tile_seams.py).
  tiles = L.tileLayer(tilejson.tiles[0], {
    bounds,
    minZoom: 0,
    minNativeZoom: tilejson.minzoom,
    maxZoom: 22,
  });
  tiles.on("tileerror", () => say("some tiles could not be loaded"));
  tiles.addTo(map);
  if (footprints) footprints.bringToFront();
  say("");
  showLegend(tilejson.tiles[0]);
  if (fit && !map.getBounds().contains(bounds)) map.fitBounds(bounds);
}

function refresh(fit) {
  const base = tileBase();
  markActive();
  showDate();
  writeHash();
  if (base) return showLayer(base, fit);
}

function markActive() {
  const scene = current();
  document.querySelectorAll("li button.active").forEach((b) => b.classList.remove("active"));
  const selector =
    state.mode === "search" ? `#searches button[title="${state.search.id}"]` : scene ? `#items button[title="${CSS.escape(scene.id)}"]` : null;
  const button = selector && document.querySelector(selector);
  if (button) button.classList.add("active");
  if (footprints) {
    footprints.eachLayer((outline) => {
      const on = scene && outline.feature.id === scene.id;
      outline.setStyle(on ? { color: "#2a6fdb", weight: 2 } : { color: "#555", weight: 1 });
    });
  }
}

function showDate() {
  const scene = current();
  if (scene) {
    const cloud = scene.cloud == null ? "" : ` · ${Math.round(scene.cloud)} % cloud`;
    dateOutput.textContent = scene.datetime.slice(0, 10) + cloud;
  } else {
    dateOutput.textContent = state.search ? "all dates (mosaic)" : "";
  }
  const time = scene ? seconds(scene.datetime) : null;
  Charts.select(time);
  if (terratiler.lastField) showHistogram();
}

function setDates(dates, index) {
  state.dates = dates;
  const positions = dates.length + (state.mode === "search" ? 1 : 0);
  slider.max = Math.max(0, positions - 1);
  slider.disabled = positions < 2;
  state.index = Math.min(Math.max(0, index), Math.max(0, positions - 1));
  slider.value = state.index;
}

slider.addEventListener("input", () => {
  state.index = Number(slider.value);
  refresh(false);
});

// ------------------------------------------------------------------ legend

function showLegend(tileUrl) {
  const query = new URL(tileUrl, location.href).searchParams;
  const name = query.get("colormap_name");
  const rescale = query.getAll("rescale");
  const colormap = query.get("colormap");
  // The layer's name; the search's own layer by its expression.
  const title = presetSelect.value ? presetSelect.selectedOptions[0].textContent : query.get("expression") || "the search's layer";
  legendBox.textContent = "";
  const caption = document.createElement("div");
  legendBox.appendChild(caption);
  let legend;
  if (name) {
    const [low, high] = (rescale[0] || "0,255").split(",");
    legend = { colormap: name, rescale: [Number(low), Number(high)] };
    caption.textContent = `${title} (${name})`;
    const ramp = document.createElement("img");
    ramp.alt = `${name} colour ramp`;
    ramp.src = `colorMaps/${encodeURIComponent(name)}?f=png&orientation=horizontal&width=256&height=12`;
    const ends = document.createElement("div");
    ends.className = "ends";
    for (const value of [low, (Number(low) + Number(high)) / 2, high]) {
      const label = document.createElement("span");
      label.textContent = Number(value).toString();
      ends.appendChild(label);
    }
    legendBox.append(ramp, ends);
  } else if (colormap) {
    const classes = JSON.parse(colormap);
    legend = { colormap: "classes", classes: Object.keys(classes).map(Number) };
    caption.textContent = title;
    const list = document.createElement("ul");
    for (const [value, [r, g, b, a]] of Object.entries(classes)) {
      if (a === 0) continue;
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = `rgb(${r},${g},${b})`;
      item.append(swatch, `${value} ${SCL_CLASSES[Number(value)] || ""}`);
      list.appendChild(item);
    }
    legendBox.appendChild(list);
  } else {
    const assets = query.getAll("assets");
    const ranges = rescale.length ? ` · reflectance ${rescale[0].replace(",", "–")}` : "";
    legend = { colormap: "rgb", assets, rescale: rescale.map((r) => r.split(",").map(Number)) };
    caption.textContent = `${title}: ${assets.join(", ") || "RGB"}${ranges}`;
  }
  legendBox.dataset.colormap = legend.colormap;
  legendBox.dataset.rescale = legend.rescale ? JSON.stringify(legend.rescale) : "";
  terratiler.legend = legend;
}

// ------------------------------------------------------------------ scenes and searches

function entry(list, text, title, onClick) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = text;
  button.title = title;
  button.addEventListener("click", onClick);
  item.appendChild(button);
  list.appendChild(item);
}

function sceneLabel(scene) {
  const date = scene.datetime.slice(0, 10);
  return scene.cloud == null ? date : `${date} · ${Math.round(scene.cloud)} % cloud`;
}

function setSearchLayerOption(on) {
  let option = presetSelect.querySelector('option[value=""]');
  if (on && !option) {
    option = new Option("the search's layer", "");
    presetSelect.add(option, 0);
  } else if (!on && option) {
    option.remove();
    if (!presetSelect.value) presetSelect.value = "true-color";
  }
}

function openScene(id, fit) {
  if (state.mode !== "scene") {
    state.mode = "scene";
    state.search = null;
    setSearchLayerOption(false);
  }
  setDates(state.scenes, state.scenes.findIndex((s) => s.id === id));
  return refresh(fit);
}

async function openSearch(record, index, fit) {
  const info = await getJSON(`searches/${record.id}/info`).catch((error) => say(`search: ${error.message}`));
  if (!info) return;
  state.mode = "search";
  state.search = record;
  // The search's defaults: a search registered with preset=ndvi and mask=scl-clear opens so.
  const defaults = (record.metadata && record.metadata.defaults) || {};
  const presets = Array.from(presetSelect.options, (o) => o.value);
  setSearchLayerOption(!defaults.preset || !presets.includes(defaults.preset));
  presetSelect.value = defaults.preset && presets.includes(defaults.preset) ? defaults.preset : defaults.expression || defaults.assets ? "" : "true-color";
  maskBox.checked = defaults.mask === "scl-clear";
  const dates = info.items
    .map((i) => ({ id: i.id, collection: i.collection, datetime: i.datetime, cloud: i["eo:cloud_cover"] }))
    .sort((a, b) => a.datetime.localeCompare(b.datetime));
  setDates(dates, index);
  await refresh(fit);
}

async function loadCollection() {
  const collections = (await getJSON("catalog/collections")).collections;
  if (!collections.length) return;
  const collection = collections[0];
  state.collection = collection.id;
  const bbox = collection.extent && collection.extent.spatial && collection.extent.spatial.bbox[0];
  if (bbox) state.extent = bbox;
}

async function loadScenes() {
  const response = await fetch("catalog/search?limit=100");
  if (!response.ok) {
    say(`scenes: ${response.status}: ${await detail(response)}`);
    return;
  }
  const features = (await response.json()).features;
  state.scenes = features
    .map((f) => ({
      id: f.id,
      collection: f.collection,
      datetime: f.properties.datetime || "",
      cloud: f.properties["eo:cloud_cover"],
      geometry: f.geometry,
    }))
    .sort((a, b) => a.datetime.localeCompare(b.datetime));
  const list = document.getElementById("items");
  for (const scene of [...state.scenes].reverse()) {
    entry(list, sceneLabel(scene), scene.id, () => openScene(scene.id, true));
  }
  footprints = L.geoJSON(
    { type: "FeatureCollection", features: features.filter((f) => f.geometry) },
    { style: { color: "#555", weight: 1, fill: false, dashArray: "4 3" }, interactive: false },
  ).addTo(map);
}

async function loadSearches() {
  const response = await fetch("searches?limit=100");
  if (!response.ok) return;
  const list = document.getElementById("searches");
  list.textContent = "";
  for (const search of (await response.json()).searches) {
    const name = (search.metadata && search.metadata.name) || search.id.slice(0, 12);
    entry(list, name, search.id, () => openSearch(search, 0, true));
  }
}

function searchRecord(id) {
  return getJSON(`searches/${id}`);
}

// The search behind point charts and animations of scenes: every scene the viewer lists,
// registered once (the same scenes give the same id).
function viewerSearchId() {
  if (state.mode === "search") return Promise.resolve(state.search.id);
  if (!catalogSearch) {
    const body = { ids: state.scenes.map((s) => s.id), metadata: { name: "all scenes" } };
    if (state.collection) body.collections = [state.collection];
    catalogSearch = getJSON("searches/register", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    })
      .then((record) => {
        loadSearches();
        return record.id;
      })
      .catch((error) => {
        catalogSearch = null;
        throw error;
      });
  }
  return catalogSearch;
}

// ------------------------------------------------------------------ point chart

function chartMessage(id, text) {
  // A chart that could not be drawn says why in its place.
  Charts.clear(id);
  const box = document.getElementById(id);
  box.textContent = text;
  box.classList.toggle("message", Boolean(text));
}

let pointMarker = null;

async function pointChart(lon, lat) {
  state.point = [lon, lat];
  writeHash();
  if (pointMarker) pointMarker.remove();
  pointMarker = L.circleMarker([lat, lon], { radius: 5, color: "#d0342c", interactive: false }).addTo(map);
  const section = document.getElementById("point-section");
  section.hidden = false;
  document.getElementById("point-where").textContent = `${lon.toFixed(5)}, ${lat.toFixed(5)}`;
  let data;
  let url;
  const ticket = ++tickets.point;
  try {
    url = `searches/${await viewerSearchId()}/point/${lon},${lat}?${layerParams()}`;
    data = await getJSON(url);
  } catch (error) {
    if (ticket !== tickets.point) return;
    terratiler.lastPoint = null;
    chartMessage("point-chart", error.message);
    return;
  }
  if (ticket !== tickets.point) return;
  const times = data.series.map((s) => seconds(s.datetime));
  const bands = data.band_names.map((_, b) => data.series.map((s) => (s.values ? s.values[b] : null)));
  const scene = current();
  // Band names are the preset's expression: label a single band with the layer's name.
  const title = presetSelect.selectedOptions[0] ? presetSelect.selectedOptions[0].textContent : "value";
  const labels = data.band_names.length === 1 ? [title] : data.band_names.map((name) => (name.length > 24 ? name.slice(0, 24) + "…" : name));
  Charts.series("point-chart", times, bands, labels, scene ? seconds(scene.datetime) : null);
  terratiler.lastPoint = {
    url,
    coordinates: [lon, lat],
    band_names: data.band_names,
    dates: data.series.map((s) => s.datetime),
    values: bands,
  };
  section.dataset.points = bands[0].filter((v) => v != null).length;
  say("");
}

function downloadPoint() {
  const p = terratiler.lastPoint;
  if (!p) return;
  const rows = p.dates.map((d, i) => [d, ...p.values.map((band) => band[i])]);
  Charts.download(`point_${p.coordinates[0].toFixed(5)}_${p.coordinates[1].toFixed(5)}.csv`, ["datetime", ...p.band_names], rows);
}

// ------------------------------------------------------------------ field chart

function number(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function statisticsRequest(geometry) {
  const dates = state.dates.length ? state.dates : state.scenes;
  const last = dates.length ? new Date(dates[dates.length - 1].datetime) : new Date();
  const end = new Date(Date.UTC(last.getUTCFullYear(), last.getUTCMonth(), last.getUTCDate() + 1));
  const first = dates.length ? new Date(dates[0].datetime) : end;
  let start = new Date(Date.UTC(first.getUTCFullYear(), first.getUTCMonth(), first.getUTCDate()));
  const earliest = new Date(end.getTime() - MAX_STAT_DAYS * 86400e3);
  if (start < earliest) start = earliest;
  const collection = (dates[0] && dates[0].collection) || state.collection || "sentinel-2-l2a";
  return {
    input: {
      bounds: { geometry },
      data: [{ type: collection, dataFilter: { maxCloudCoverage: 100, mosaickingOrder: "mostRecent" } }],
    },
    aggregation: {
      timeRange: { from: start.toISOString().slice(0, 19) + "Z", to: end.toISOString().slice(0, 19) + "Z" },
      aggregationInterval: { of: "P1D" },
      outputs: { ndvi: { expression: NDVI } },
      mask: maskBox.checked ? "scl-clear" : "none",
    },
    calculations: {
      default: {
        statistics: { default: { percentiles: { k: [10, 50, 90] } } },
        histograms: { default: HISTOGRAM },
      },
    },
  };
}

async function selectField(field) {
  state.field = field;
  writeHash();
  if (selectedOutline) selectedOutline.remove();
  selectedOutline = L.geoJSON(field.geometry, { style: { color: "#ffd400", weight: 3, fill: false }, interactive: false }).addTo(map);
  const section = document.getElementById("field-section");
  section.hidden = false;
  document.getElementById("field-name").textContent = field.name;
  const request = statisticsRequest(field.geometry);
  let response;
  const ticket = ++tickets.field;
  try {
    response = await getJSON("statistics", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(request),
    });
  } catch (error) {
    if (ticket !== tickets.field) return;
    terratiler.lastField = null;
    chartMessage("field-chart", error.message);
    chartMessage("histogram-chart", "");
    return;
  }
  if (ticket !== tickets.field) return;
  const rows = response.data
    .filter((d) => d.outputs && d.outputs.ndvi)
    .map((d) => {
      const band = d.outputs.ndvi.bands.B0;
      const stats = band.stats;
      const p = stats.percentiles || {};
      return {
        date: d.interval.from.slice(0, 10),
        time: seconds(d.interval.from),
        mean: number(stats.mean),
        stDev: number(stats.stDev),
        min: number(stats.min),
        max: number(stats.max),
        p10: number(p["10.0"]),
        p50: number(p["50.0"]),
        p90: number(p["90.0"]),
        sampleCount: stats.sampleCount,
        noDataCount: stats.noDataCount,
        histogram: band.histogram,
      };
    });
  const scene = current();
  Charts.meanBand(
    "field-chart",
    rows.map((r) => r.time),
    rows.map((r) => r.mean),
    rows.map((r) => r.stDev || 0),
    scene ? seconds(scene.datetime) : null,
  );
  terratiler.lastField = {
    name: field.name,
    request,
    dates: rows.map((r) => r.date),
    mean: rows.map((r) => r.mean),
    stDev: rows.map((r) => r.stDev),
    rows,
  };
  section.dataset.dates = rows.length;
  showHistogram();
  say("");
}

function showHistogram() {
  const field = terratiler.lastField;
  const scene = current();
  const date = scene ? scene.datetime.slice(0, 10) : null;
  const withData = field.rows.filter((r) => r.mean != null);
  const row = field.rows.find((r) => r.date === date && r.mean != null) || withData[withData.length - 1];
  const label = document.getElementById("histogram-date");
  if (!row || !row.histogram) {
    label.textContent = "(no clear pixels)";
    Charts.clear("histogram-chart");
    document.getElementById("histogram-chart").textContent = "";
    return;
  }
  label.textContent = row.date === date ? row.date : `${row.date} (the last clear date)`;
  const bins = row.histogram.bins;
  Charts.histogram(
    "histogram-chart",
    bins.map((b) => (b.lowEdge + b.highEdge) / 2),
    bins.map((b) => b.count),
    bins[0].highEdge - bins[0].lowEdge,
  );
  field.histogramDate = row.date;
  field.histogram = bins;
}

function downloadField() {
  const f = terratiler.lastField;
  if (!f) return;
  const header = ["date", "mean", "stDev", "min", "max", "p10", "p50", "p90", "sampleCount", "noDataCount"];
  const rows = f.rows.map((r) => header.map((k) => r[k]));
  terratiler.lastCsv = Charts.download(`${f.name.replace(/[^\w.-]+/g, "_")}_ndvi.csv`, header, rows);
}

document.getElementById("point-csv").addEventListener("click", downloadPoint);
document.getElementById("field-csv").addEventListener("click", downloadField);

// ------------------------------------------------------------------ fields: vector layers, drop, draw

function featureName(feature, index) {
  const p = feature.properties || {};
  return String(p.identifier ?? p.name ?? p.id ?? feature.id ?? `feature ${index + 1}`);
}

function isPolygon(feature) {
  return feature.geometry && /Polygon$/.test(feature.geometry.type);
}

function fieldLayer(collection, layerName) {
  let index = 0;
  return L.geoJSON(collection, {
    filter: isPolygon,
    style: { color: "#fff", weight: 1, fillOpacity: 0.05 },
    onEachFeature: (feature, outline) => {
      const name = featureName(feature, index++);
      const key = layerName ? `${layerName}:${name}` : null;
      if (key) vectorFeatures.set(key, feature);
      outline.bindTooltip(name, { sticky: true });
      outline.on("click", () => {
        if (!map.pm.globalDrawModeEnabled()) selectField({ name, geometry: feature.geometry, key });
      });
    },
  });
}

async function loadVectors() {
  const response = await fetch("vectors");
  if (!response.ok) return;
  const box = document.getElementById("vectors");
  for (const vector of (await response.json()).vectors) {
    const collection = await getJSON(vector.href).catch(() => null);
    if (!collection) continue;
    const layer = fieldLayer(collection, vector.name).addTo(map);
    const label = document.createElement("label");
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.checked = true;
    toggle.dataset.vector = vector.name;
    toggle.addEventListener("change", () => (toggle.checked ? layer.addTo(map) : layer.remove()));
    label.append(toggle, ` ${vector.name} (${layer.getLayers().length})`);
    box.appendChild(label);
  }
}

// A GeoJSON file dropped on the map: drawn, and its first polygon picked.
const mapBox = document.getElementById("map");
mapBox.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dropping");
});
mapBox.addEventListener("dragleave", () => document.body.classList.remove("dropping"));
mapBox.addEventListener("drop", async (event) => {
  event.preventDefault();
  document.body.classList.remove("dropping");
  const file = event.dataTransfer.files[0];
  if (file) addGeoJSON(await file.text(), file.name);
});

function addGeoJSON(text, name) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (error) {
    say(`${name}: not JSON (${error.message})`);
    return null;
  }
  const layer = fieldLayer(data, null).addTo(map);
  const first = layer.getLayers()[0];
  if (!first) {
    say(`${name}: no polygon in it`);
    layer.remove();
    return null;
  }
  map.fitBounds(layer.getBounds());
  selectField({ name: featureName(first.feature, 0), geometry: first.feature.geometry, key: null });
  return layer;
}

map.pm.addControls({
  position: "topleft",
  drawMarker: false,
  drawCircleMarker: false,
  drawPolyline: false,
  drawCircle: false,
  drawText: false,
  drawRectangle: true,
  drawPolygon: true,
  editMode: false,
  dragMode: false,
  cutPolygon: false,
  rotateMode: false,
  removalMode: false,
});
map.on("pm:create", (event) => {
  if (drawn) drawn.remove();
  drawn = event.layer;
  selectField({ name: "drawn polygon", geometry: drawn.toGeoJSON().geometry, key: null });
});

map.on("click", (event) => {
  if (map.pm.globalDrawModeEnabled()) return;
  const { lat, lng } = event.latlng.wrap();
  pointChart(Number(lng.toFixed(6)), Number(lat.toFixed(6)));
});

// ------------------------------------------------------------------ animation

async function animate() {
  const button = document.getElementById("animate");
  const bounds = map.getBounds();
  const west = Math.max(-180, bounds.getWest());
  const east = Math.min(180, bounds.getEast());
  const south = Math.max(-85, bounds.getSouth());
  const north = Math.min(85, bounds.getNorth());
  const size = map.getSize();
  const scale = Math.min(1, ANIMATION_MAX_SIDE / Math.max(size.x, size.y));
  const width = Math.max(16, Math.round(size.x * scale));
  const height = Math.max(16, Math.round(size.y * scale));
  const bbox = [west, south, east, north].map((v) => v.toFixed(6)).join(",");
  button.disabled = true;
  say("animating ...");
  try {
    const params = layerParams();
    const minClear = Number(document.getElementById("min-clear").value) || 0;
    if (minClear > 0) params.set("min_clear", String(minClear));
    const url = `searches/${await viewerSearchId()}/bbox/${bbox}/${width}x${height}.gif?${params}`;
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${response.status}: ${await detail(response)}`);
    const blob = await response.blob();
    const image = document.getElementById("animation");
    if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
    image.src = URL.createObjectURL(blob);
    document.getElementById("animation-section").hidden = false;
    const frames = response.headers.get("X-Animation-Frames") || "";
    const labels = (response.headers.get("X-Animation-Labels") || "").split(",").filter(Boolean);
    document.getElementById("animation-caption").textContent =
      `${frames.split("/")[0] || "?"} frames of ${frames.split("/")[1] || "?"} dates` + (labels.length ? `: ${labels.join(", ")}` : "");
    terratiler.lastAnimation = { url: new URL(url, location.href).href, bytes: blob.size, type: blob.type, frames, labels };
    say("");
  } catch (error) {
    say(`animation: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

document.getElementById("animate").addEventListener("click", animate);

// ------------------------------------------------------------------ permalink (state in the URL hash)

let written = "";
let started = false; // the hash is written once the page has read it

function hashParams() {
  const params = new URLSearchParams();
  const center = map.getCenter();
  params.set("map", `${map.getZoom()}/${center.lat.toFixed(5)}/${center.lng.toFixed(5)}`);
  const scene = current();
  if (state.mode === "search") {
    params.set("search", state.search.id);
    params.set("date", scene ? scene.datetime.slice(0, 10) : "mosaic");
  } else if (scene) {
    params.set("scene", `${scene.collection}/${scene.id}`);
  }
  params.set("layer", presetSelect.value);
  params.set("mask", maskBox.checked ? "1" : "0");
  if (state.field && state.field.key) params.set("field", state.field.key);
  else if (state.field) {
    const ring = ringOf(state.field.geometry);
    if (ring) params.set("polygon", ring.map(([x, y]) => `${x.toFixed(6)},${y.toFixed(6)}`).join(";"));
  }
  if (state.point) params.set("point", state.point.join(","));
  return params;
}

// A drawn or dropped polygon goes into the link as its ring, when it is small enough.
const MAX_LINK_VERTICES = 100;

function ringOf(geometry) {
  if (!geometry || geometry.type !== "Polygon" || geometry.coordinates.length !== 1) return null;
  const ring = geometry.coordinates[0];
  return ring.length <= MAX_LINK_VERTICES ? ring : null;
}

function writeHash() {
  if (restoring || !started) return;
  written = "#" + hashParams().toString().replace(/%2F/g, "/").replace(/%2C/g, ",").replace(/%3A/g, ":").replace(/%3B/g, ";");
  history.replaceState(null, "", written);
  document.getElementById("permalink").href = written;
}

let restoring = false;

async function restore(hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  if (![...params.keys()].length) return false;
  restoring = true;
  try {
    const view = (params.get("map") || "").split("/").map(Number);
    if (view.length === 3 && view.every(Number.isFinite)) map.setView([view[1], view[2]], view[0]);
    const layer = params.get("layer");
    const mask = params.get("mask");
    const applyLayer = () => {
      if (layer !== null && Array.from(presetSelect.options).some((o) => o.value === layer)) presetSelect.value = layer;
      if (mask !== null) maskBox.checked = mask === "1";
    };
    if (params.get("search")) {
      const record = await searchRecord(params.get("search")).catch((error) => say(`search: ${error.message}`));
      if (record) {
        const date = params.get("date");
        const info = await getJSON(`searches/${record.id}/info`).catch(() => ({ items: [] }));
        const days = info.items.map((i) => i.datetime.slice(0, 10)).sort();
        await openSearch(record, date && date !== "mosaic" ? days.indexOf(date) + 1 : 0, false);
        applyLayer();
      }
    } else {
      applyLayer();
      const scene = (params.get("scene") || "").split("/").slice(1).join("/");
      const found = state.scenes.findIndex((s) => s.id === scene);
      if (found < 0 && scene) say(`scene ${scene} is not in the catalog`);
      openSceneAt(found >= 0 ? found : clearestIndex());
    }
    await refresh(false);
    const field = params.get("field");
    if (field && vectorFeatures.has(field)) {
      const feature = vectorFeatures.get(field);
      selectField({ name: field.split(":").slice(1).join(":"), geometry: feature.geometry, key: field });
    }
    const ring = (params.get("polygon") || "").split(";").filter(Boolean).map((p) => p.split(",").map(Number));
    if (!field && ring.length >= 4 && ring.every((p) => p.length === 2 && p.every(Number.isFinite))) {
      selectField({ name: "drawn polygon", geometry: { type: "Polygon", coordinates: [ring] }, key: null });
    }
    const point = (params.get("point") || "").split(",").map(Number);
    if (point.length === 2 && point.every(Number.isFinite)) pointChart(point[0], point[1]);
  } finally {
    restoring = false;
  }
  return true;
}

function openSceneAt(index) {
  state.mode = "scene";
  state.search = null;
  setSearchLayerOption(false);
  setDates(state.scenes, index);
}

function clearestIndex() {
  // The clearest scene (the newest of the clearest).
  let best = -1;
  state.scenes.forEach((s, i) => {
    if (best < 0 || (s.cloud ?? 100) <= (state.scenes[best].cloud ?? 100)) best = i;
  });
  return Math.max(0, best);
}

window.addEventListener("hashchange", async () => {
  if (location.hash !== written && (await restore(location.hash))) writeHash();
});

map.on("moveend", writeHash);

for (const control of [presetSelect, maskBox]) {
  control.addEventListener("change", () => {
    refresh(false);
    if (state.point) pointChart(...state.point);
    // The field chart is NDVI whatever the layer: only the mask changes it.
    if (state.field && control === maskBox) selectField(state.field);
  });
}

// ------------------------------------------------------------------ start

async function start() {
  const hash = location.hash; // before the first map move rewrites it
  await loadCollection().catch((error) => say(`catalog: ${error.message}`));
  if (state.extent) {
    const [west, south, east, north] = state.extent;
    map.fitBounds([[south, west], [north, east]]);
  }
  await Promise.all([loadScenes(), loadSearches(), loadVectors()]);
  const restored = await restore(hash);
  started = true;
  if (!restored) {
    openSceneAt(clearestIndex());
    await refresh(false);
  }
  writeHash();
  document.body.dataset.ready = "true";
}

start();

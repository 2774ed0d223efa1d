// terratiler's viewer: the service's scenes and registered searches on a Leaflet map.
// Every layer comes from the service's own TileJSON; URLs are relative to this page, so
// the viewer works behind a path prefix too.
"use strict";

const map = L.map("map", { worldCopyJump: true }).setView([20, 0], 2);
const presetSelect = document.getElementById("preset");
const maskBox = document.getElementById("mask");
const statusLine = document.getElementById("status");
let layer = null;
let shown = null; // {base, button}

function say(text) {
  statusLine.textContent = text;
}

function layerQuery() {
  const params = new URLSearchParams({ preset: presetSelect.value });
  if (maskBox.checked) params.set("mask", "scl-clear");
  return params.toString();
}

async function detail(response) {
  try {
    return (await response.json()).detail;
  } catch (error) {
    return response.statusText;
  }
}

async function show(base, button, fit) {
  shown = { base, button };
  document.querySelectorAll("li button.active").forEach((b) => b.classList.remove("active"));
  button.classList.add("active");
  // Leaflet lays out 256 px tiles.
  const response = await fetch(`${base}/WebMercatorQuad/tilejson.json?tilesize=256&${layerQuery()}`);
  if (!response.ok) {
    say(`${response.status}: ${await detail(response)}`);
    return;
  }
  const tilejson = await response.json();
  const [west, south, east, north] = tilejson.bounds;
  const bounds = L.latLngBounds([south, west], [north, east]);
  if (layer) map.removeLayer(layer);
  layer = L.tileLayer(tilejson.tiles[0], {
    bounds,
    minZoom: 0,
    minNativeZoom: tilejson.minzoom,
    maxNativeZoom: tilejson.maxzoom,
    maxZoom: 22,
  });
  layer.on("tileerror", () => say("some tiles could not be loaded"));
  layer.addTo(map);
  say("");
  if (fit) map.fitBounds(bounds);
}

function entry(list, text, title, base) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = text;
  button.title = title;
  button.dataset.base = base;
  button.addEventListener("click", () => show(base, button, true));
  item.appendChild(button);
  list.appendChild(item);
}

async function loadItems() {
  const response = await fetch("catalog/search?limit=100");
  if (!response.ok) {
    say(`scenes: ${response.status}: ${await detail(response)}`);
    return;
  }
  const features = (await response.json()).features;
  features.sort((a, b) => (b.properties.datetime || "").localeCompare(a.properties.datetime || ""));
  const list = document.getElementById("items");
  for (const item of features) {
    const date = (item.properties.datetime || "").slice(0, 10);
    const cloud = item.properties["eo:cloud_cover"];
    const text = cloud === undefined ? date : `${date} · ${Math.round(cloud)} % cloud`;
    entry(list, text, item.id, `collections/${encodeURIComponent(item.collection)}/items/${encodeURIComponent(item.id)}`);
  }
}

async function loadSearches() {
  const response = await fetch("searches?limit=100");
  if (!response.ok) return;
  const list = document.getElementById("searches");
  for (const search of (await response.json()).searches) {
    const name = (search.metadata && search.metadata.name) || search.id.slice(0, 12);
    entry(list, name, search.id, `searches/${search.id}`);
  }
}

for (const control of [presetSelect, maskBox]) {
  control.addEventListener("change", () => {
    if (shown) show(shown.base, shown.button, false);
  });
}

loadItems();
loadSearches();

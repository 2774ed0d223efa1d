//VERSION=3
// Uses Date (the V8 path only): NDVI scaled by the day of the year of a fixed date.
function setup() {
  return {
    input: ["B04", "B08"],
    output: { bands: 1, sampleType: "FLOAT32" },
  };
}

const start = new Date(Date.UTC(2024, 0, 1));
const day = new Date(Date.UTC(2024, 2, 1));
const dayOfYear = (day - start) / 86400000 + 1;

function evaluatePixel(sample) {
  return [dayOfYear * (sample.B08 - sample.B04) / (sample.B08 + sample.B04)];
}

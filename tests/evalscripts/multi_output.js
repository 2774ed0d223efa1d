//VERSION=3
// Several outputs from one pass: a stretched RGB, an index, and a few Math.* functions.
const STRETCH = [0, 0.3];

function setup() {
  return {
    input: [{ bands: ["B02", "B03", "B04", "B08", "B11", "dataMask"], units: "REFLECTANCE" }],
    output: [
      { id: "default", bands: 3, sampleType: "AUTO" },
      { id: "index", bands: 2, sampleType: "FLOAT32" },
      { id: "math", bands: 6, sampleType: "FLOAT32" },
      { id: "dataMask", bands: 1 },
    ],
  };
}

function stretch(v) {
  return valueInterpolate(v, STRETCH, [0, 1]);
}

function evaluatePixel(s) {
  const ndvi = index(s.B08, s.B04);
  const nbr = (s.B08 - s.B11) / (s.B08 + s.B11);
  let brightness = Math.sqrt(Math.pow(s.B04, 2) + s.B03 ** 2 + s.B02 * s.B02);
  const wet = s.B03 > s.B08 && s.B03 > 0.05;
  return {
    default: [stretch(s.B04), stretch(s.B03), stretch(s.B02)],
    index: [ndvi, nbr],
    math: [
      brightness,
      Math.round(ndvi * 10) / 10,
      Math.max(s.B02, s.B03, s.B04) - Math.min(s.B02, s.B03, s.B04),
      Math.abs(nbr) * Math.sign(ndvi),
      Math.log(1 + s.B08) + Math.exp(-s.B11) + Math.floor(s.B04 * 4) - Math.ceil(s.B03 * 4),
      wet ? Math.atan2(s.B03, s.B08) / Math.PI : 0,
    ],
    dataMask: [s.dataMask],
  };
}

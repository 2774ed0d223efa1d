//VERSION=3
// Normalized difference moisture index, dry pixels red, wet pixels blue.
function setup() {
  return {
    input: [{ bands: ["B8A", "B11"] }],
    output: [{ id: "default", bands: 3 }],
  };
}

function evaluatePixel(sample) {
  let ndmi = (sample.B8A - sample.B11) / (sample.B8A + sample.B11);
  return ndmi > 0 ? [0, 0, ndmi] : [-ndmi, 0, 0];
}

//VERSION=3
// Enhanced vegetation index (input as an object list, units spelled out).
function setup() {
  return {
    input: [{ bands: ["B02", "B04", "B08"], units: "REFLECTANCE" }],
    output: { id: "default", bands: 1, sampleType: "FLOAT32" },
  };
}

function evaluatePixel(s) {
  const G = 2.5, C1 = 6, C2 = 7.5, L = 1;
  return [G * (s.B08 - s.B04) / (s.B08 + C1 * s.B04 - C2 * s.B02 + L)];
}

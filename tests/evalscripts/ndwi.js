//VERSION=3
// McFeeters NDWI with Sentinel Hub's index() helper.
function setup() {
  return {
    input: ["B03", "B08"],
    output: { bands: 1, sampleType: "FLOAT32" },
  };
}

function evaluatePixel(sample) {
  return [index(sample.B03, sample.B08)];
}

//VERSION=3
// True colour with a gain, transparent where there is no data.
let gain = 2.5;

function setup() {
  return {
    input: [{ bands: ["B02", "B03", "B04", "dataMask"], units: "REFLECTANCE" }],
    output: { bands: 4, sampleType: "AUTO" },
  };
}

function evaluatePixel(sample) {
  const rgb = [sample.B04, sample.B03, sample.B02].map((v) => v * gain);
  return [...rgb, sample.dataMask];
}

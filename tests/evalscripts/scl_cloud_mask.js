//VERSION=3
// True colour with clouds, cloud shadows and cirrus (SCL 3, 8, 9, 10) made transparent.
function setup() {
  return {
    input: [{ bands: ["B02", "B03", "B04", "SCL", "dataMask"] }],
    output: { bands: 4 },
  };
}

function isCloud(scl) {
  return scl === 3 || scl === 8 || scl === 9 || scl === 10;
}

function evaluatePixel(sample) {
  if (isCloud(sample.SCL)) {
    return [0, 0, 0, 0];
  }
  return [3 * sample.B04, 3 * sample.B03, 3 * sample.B02, sample.dataMask];
}

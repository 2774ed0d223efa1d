//VERSION=3
// NDVI classes as colours through an if / else-if chain with early returns.
function setup() {
  return {
    input: ["B04", "B08", "dataMask"],
    output: { bands: 4, sampleType: "UINT8" },
  };
}

function evaluatePixel(sample) {
  var ndvi = index(sample.B08, sample.B04);
  let alpha = 255;
  if (sample.dataMask == 0) alpha = 0;
  if (ndvi < -0.2) return [0, 0, 128, alpha];
  else if (ndvi < 0) {
    return [190, 190, 190, alpha];
  } else if (ndvi < 0.2) {
    return [230, 205, 128, alpha];
  } else if (ndvi < 0.5) {
    let green = Math.round(255 * ndvi);
    return [70, green, 40, alpha];
  }
  return [0, 100, 0, alpha];
}

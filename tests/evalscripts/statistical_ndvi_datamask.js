//VERSION=3
// Sentinel Hub's Statistical API NDVI script (sentinelhub-py's example): an `ndvi`
// FLOAT32 output and a `dataMask` output that drops water (SCL 6) and 0/0 pixels.
function setup() {
  return {
    input: [
      {
        bands: ["B04", "B08", "SCL", "dataMask"],
      },
    ],
    output: [
      {
        id: "ndvi",
        bands: 1,
        sampleType: "FLOAT32",
      },
      {
        id: "dataMask",
        bands: 1,
      },
    ],
  };
}

function evaluatePixel(samples) {
  let ndvi = (samples.B08 - samples.B04) / (samples.B08 + samples.B04);

  var validNDVIMask = 1;
  if (samples.B08 + samples.B04 == 0) {
    validNDVIMask = 0;
  }

  var noWaterMask = 1;
  if (samples.SCL == 6) {
    noWaterMask = 0;
  }

  return {
    ndvi: [ndvi],
    dataMask: [samples.dataMask * validNDVIMask * noWaterMask],
  };
}

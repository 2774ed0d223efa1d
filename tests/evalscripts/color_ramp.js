//VERSION=3
// NDVI through Sentinel Hub's ColorRampVisualizer (hex colours), dataMask as alpha.
const ramp = [
  [-0.2, 0x0c0c0c],
  [0.0, 0xeaeaea],
  [0.2, 0xccc682],
  [0.4, 0x91bf51],
  [0.6, 0x4f8a2e],
  [0.8, 0x0f540a],
];
const visualizer = new ColorRampVisualizer(ramp);

function setup() {
  return {
    input: ["B04", "B08", "dataMask"],
    output: { bands: 4 },
  };
}

function evaluatePixel(sample) {
  const ndvi = (sample.B08 - sample.B04) / (sample.B08 + sample.B04);
  const rgb = visualizer.process(ndvi);
  return rgb.concat(sample.dataMask);
}

//VERSION=3
// Colour infrared (B08, B04, B03) through Sentinel Hub's HighlightCompressVisualizer.
const viz = new HighlightCompressVisualizer(0.0, 0.4);

function setup() {
  return {
    input: ["B03", "B04", "B08", "dataMask"],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  let val = [samples.B08, samples.B04, samples.B03].map((v) => viz.process(v));
  val.push(samples.dataMask);
  return val;
}

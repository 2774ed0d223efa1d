//VERSION=3
// NDWI through Sentinel Hub's colorBlend (RGB colours as 0..1 arrays).
function setup() {
  return {
    input: ["B03", "B08", "dataMask"],
    output: { bands: 4 },
  };
}

function evaluatePixel(sample) {
  const ndwi = index(sample.B03, sample.B08);
  const color = colorBlend(
    ndwi,
    [-0.5, 0, 0.2, 0.6],
    [
      [0.5, 0.3, 0.1],
      [1, 1, 0.8],
      [0.3, 0.6, 1],
      [0, 0, 0.5],
    ]
  );
  return [color[0], color[1], color[2], sample.dataMask];
}

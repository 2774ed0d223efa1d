//VERSION=3
// The median of five bands: a for-loop and Array.prototype.sort (the V8 path only).
function setup() {
  return {
    input: ["B02", "B03", "B04", "B08", "B11"],
    output: { bands: 1, sampleType: "FLOAT32" },
  };
}

function evaluatePixel(sample) {
  const values = [];
  for (const band of ["B02", "B03", "B04", "B08", "B11"]) {
    values.push(sample[band]);
  }
  values.sort((a, b) => a - b);
  let total = 0;
  for (let i = 0; i < values.length; i++) {
    total += values[i];
  }
  return [values[2] + 0 * total];
}

//VERSION=3
// A user class (the V8 path only): NDVI through a small scaler object.
class Scaler {
  constructor(low, high) {
    this.low = low;
    this.high = high;
  }

  scale(value) {
    return (value - this.low) / (this.high - this.low);
  }
}

const scaler = new Scaler(-1, 1);

function setup() {
  return {
    input: ["B04", "B08"],
    output: { bands: 1, sampleType: "FLOAT32" },
  };
}

function evaluatePixel(sample) {
  return [scaler.scale((sample.B08 - sample.B04) / (sample.B08 + sample.B04))];
}

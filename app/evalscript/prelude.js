// Sentinel Hub's evalscript helper library (V3) for the V8 path (app/evalscript/v8.py).
// The semantics are those of app/evalscript/helpers.py (the translator's numpy version,
// whose docstring lists them); tests/test_evalscript_corpus.py compares the two engines.
// The helpers are properties of the global object, set by assignment (not declarations), so a
// script may declare its own `index` or `const colorBlend = ...`: its declaration wins, and no
// 'already declared' SyntaxError.

(function (G) {
  const JAVA_DOUBLE_MAX_VAL = 1.7976931348623157e308;

  function index(x, y) {
    return x + y != 0 ? (x - y) / (x + y) : 0;
  }

  function inverse(x) {
    return x != 0 ? 1 / x : JAVA_DOUBLE_MAX_VAL;
  }

  function __blend(c1, c2, r) {
    if (Array.isArray(c1)) {
      const out = [];
      for (let i = 0; i < c1.length; i++) out.push(c1[i] * (1 - r) + c2[i] * r);
      return out;
    }
    return c1 * (1 - r) + c2 * r;
  }

  function __copy(color) {
    return Array.isArray(color) ? color.slice() : color;
  }

  // colors[0] at or below limits[0], linear between neighbouring limits, the last colour
  // above (and for NaN). Unlike Sentinel Hub's own, it never writes into `colors`.
  function colorBlend(value, limits, colors) {
    if (limits.length === 0 || colors.length === 0) return colors.length ? __copy(colors[0]) : value;
    if (value <= limits[0]) return __copy(colors[0]);
    for (let i = 1; i < limits.length; i++) {
      if (value <= limits[i]) {
        const r = (value - limits[i - 1]) / (limits[i] - limits[i - 1]);
        return __blend(colors[i - 1], colors[i], r);
      }
    }
    return __copy(colors[colors.length - 1]);
  }

  function valueInterpolate(value, points, values) {
    return colorBlend(value, points, values);
  }

  // The colour of the first limit above the value, else the last.
  function colorMap(value, limits, colors) {
    for (let i = 0; i < limits.length; i++) {
      if (value < limits[i]) return __copy(colors[i]);
    }
    return __copy(colors[colors.length - 1]);
  }

  function __hexToRgb(color) {
    return [(color >>> 16) & 0xff, (color >>> 8) & 0xff, color & 0xff];
  }

  function __rgb01(color) {
    if (Array.isArray(color)) return color.map(Number);
    return __hexToRgb(color).map((c) => c / 255);
  }

  class ColorRampVisualizer {
    constructor(ramps, minVal, maxVal) {
      const pairs = ramps.map((p) => [Number(p[0]), __rgb01(p[1])]).sort((a, b) => a[0] - b[0]);
      let values = pairs.map((p) => p[0]);
      const low = values[0];
      const high = values[values.length - 1];
      const newLow = minVal === undefined || minVal === null ? low : Number(minVal);
      const newHigh = maxVal === undefined || maxVal === null ? high : Number(maxVal);
      if (high !== low && (newLow !== low || newHigh !== high)) {
        values = values.map((v) => newLow + ((v - low) * (newHigh - newLow)) / (high - low));
      }
      this.limits = values;
      this.colors = pairs.map((p) => p[1]);
    }

    process(value) {
      return colorBlend(value, this.limits, this.colors);
    }
  }

  class ColorGradientVisualizer {
    constructor(valColPairs, minVal = 0, maxVal = 1) {
      const values = valColPairs.map((p) => Number(p[0]));
      this.minVal = minVal === null ? Math.min(...values) : Number(minVal);
      this.maxVal = maxVal === null ? Math.max(...values) : Number(maxVal);
      this.values = values.map((v) => this.minVal * v + this.maxVal * (1 - v));
      this.colors = valColPairs.map((p) => __hexToRgb(p[1]));
    }

    static createBlueRed(minVal, maxVal) {
      return new ColorGradientVisualizer(
        [
          [1.0, 0x000080],
          [0.875, 0x0000ff],
          [0.625, 0x00ffff],
          [0.375, 0xffff00],
          [0.125, 0xff0000],
          [0.0, 0x800000],
        ],
        minVal,
        maxVal
      );
    }

    static createRedTemperature(minVal, maxVal) {
      return new ColorGradientVisualizer(
        [
          [1.0, 0x000000],
          [0.525, 0xae0000],
          [0.3, 0xff6e00],
          [0.25, 0xff8600],
          [0.0, 0xffffff],
        ],
        minVal,
        maxVal
      );
    }

    static createWhiteGreen(minVal, maxVal) {
      return new ColorGradientVisualizer(
        [
          [1.0, 0x000000],
          [0.6, 0x006600],
          [0.3, 0x80b300],
          [0.0, 0xffffff],
        ],
        minVal,
        maxVal
      );
    }

    process(value) {
      const n = this.values.length;
      const colors = this.colors;
      let rgb = colors[n - 1];
      if (value <= this.minVal) {
        rgb = colors[0];
      } else if (value >= this.maxVal) {
        rgb = colors[n - 1];
      } else {
        for (let i = 1; i < n; i++) {
          const before = this.values[i - 1];
          const after = this.values[i];
          if (value > before && value <= after) {
            const alpha = (value - before) / (after - before);
            rgb = [0, 1, 2].map((c) => Math.round(colors[i][c] * alpha + colors[i - 1][c] * (1 - alpha)));
            break;
          }
        }
      }
      return [rgb[0] / 255, rgb[1] / 255, rgb[2] / 255];
    }
  }

  class ColorMapVisualizer {
    constructor(valColPairs) {
      this.values = valColPairs.map((p) => Number(p[0]));
      this.colors = valColPairs.map((p) => __hexToRgb(p[1]).map((c) => c / 255));
    }

    static createDefaultColorMap() {
      return new ColorMapVisualizer([
        [-1.0, 0x000000],
        [-0.2, 0xff0000],
        [-0.1, 0x9a0000],
        [0.0, 0x660000],
        [0.1, 0xffff33],
        [0.2, 0xcccc33],
        [0.3, 0x666600],
        [0.4, 0x33ffff],
        [0.5, 0x33cccc],
        [0.6, 0x006666],
        [0.7, 0x33ff33],
        [0.8, 0x33cc33],
        [0.9, 0x006600],
      ]);
    }

    process(value) {
      let result = this.colors[0];
      for (let i = 0; i < this.values.length; i++) {
        if (value < this.values[i]) break;
        result = this.colors[i];
      }
      return result.slice();
    }
  }

  class HighlightCompressVisualizer {
    constructor(minValue = 0, maxValue = 1, gain = 1, offset = 0, gamma = 1) {
      this.minValue = Number(minValue);
      this.maxValue = Number(maxValue);
      this.gain = Number(gain);
      this.offset = Number(offset);
      this.gamma = Number(gamma);
      this.highlightPoint = 0.92;
      this.clipPoint = 2.0;
      this.compress = true;
      this.single = false;
      this.highlightAdjust = 0 < this.maxValue && this.maxValue < 1;
      this.factor = 1.0 / (this.maxValue - this.minValue);
      this.highlightFactor = (1.0 - this.highlightPoint) / (this.clipPoint - this.highlightPoint);
    }

    __wrap(v) {
      return this.single ? [v] : v;
    }

    process(value) {
      let v = this.gain * (value - this.minValue) * this.factor + this.offset;
      if (this.gamma !== 1.0) {
        v = Math.pow(Math.max(0, v), this.gamma);
        if (!this.compress) return this.__wrap(v);
      }
      if (this.compress && this.highlightAdjust && v > this.highlightPoint) {
        v = Math.max(
          Math.min(this.highlightPoint + (v - this.highlightPoint) * this.highlightFactor, 1.0),
          0.0
        );
      }
      return this.__wrap(Math.max(Math.min(v, 1.0), 0.0));
    }
  }

  class HighlightCompressVisualizerSingle extends HighlightCompressVisualizer {
    constructor(...args) {
      super(...args);
      this.single = true;
    }
  }

  class DefaultVisualizer extends HighlightCompressVisualizer {
    constructor(...args) {
      super(...args);
      this.compress = false;
    }
  }

  G.index = index;
  G.inverse = inverse;
  G.colorBlend = colorBlend;
  G.valueInterpolate = valueInterpolate;
  G.colorMap = colorMap;
  G.ColorRampVisualizer = ColorRampVisualizer;
  G.ColorGradientVisualizer = ColorGradientVisualizer;
  G.ColorMapVisualizer = ColorMapVisualizer;
  G.HighlightCompressVisualizer = HighlightCompressVisualizer;
  G.HighlightCompressVisualizerSingle = HighlightCompressVisualizerSingle;
  G.DefaultVisualizer = DefaultVisualizer;
})(globalThis);

//VERSION=3
// Sentinel Hub's scene classification script: a switch over SCL classes (ESA's legend
// colours), with a fall-through pair and a default.
function RGBToColor(r, g, b, dataMask) {
  return [r / 255, g / 255, b / 255, dataMask];
}

function setup() {
  return {
    input: ["SCL", "dataMask"],
    output: { bands: 4 },
  };
}

function evaluatePixel(samples) {
  const SCL = samples.SCL;
  let alpha = samples.dataMask;
  switch (SCL) {
    case 0:
      alpha = 0;
      break;
    case 1: return RGBToColor(255, 0, 0, alpha);
    case 2: return RGBToColor(47, 47, 47, alpha);
    case 3: return RGBToColor(100, 50, 0, alpha);
    case 4: return RGBToColor(0, 160, 0, alpha);
    case 5: return RGBToColor(255, 230, 90, alpha);
    case 6: return RGBToColor(0, 0, 255, alpha);
    case 8:
    case 9: return RGBToColor(192, 192, 192, alpha);
    case 10: return RGBToColor(100, 200, 255, alpha);
    case 11: return RGBToColor(255, 150, 255, alpha);
    default:
      alpha = alpha * 0.5;
  }
  return RGBToColor(128, 128, 128, alpha);
}

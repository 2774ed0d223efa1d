// A V1 evalscript (no //VERSION=3, no setup(), band names as globals, a top-level return).
let gain = 2.5;
return [B04 * gain, B03 * gain, B02 * gain];

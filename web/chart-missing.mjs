// What the UI imports as its chart when the chart library could not be installed: this bourse
// was built without npm (gateway/build.rs serves this file as /ui/chart.mjs then).
export const missing =
  "The chart library (lightweight-charts) was not installed when this bourse was built. Install Node.js and npm, then rebuild (cargo build runs npm ci in web/).";

"""The student in the browser (issue 14): browser weights (.kyw), a native WGSL host for tests and
benchmarks, and the static site builder. Nothing here imports kyara.server or kyara.cli."""

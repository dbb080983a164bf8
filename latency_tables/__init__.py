"""Latency lookup tables: keys per executed unit, key graphs, measurement on a runtime, table and predictor.

`keys` and `predictor` are pure Python (no torch); `measure` needs only numpy + the runtime (ONNX Runtime);
`graphs` and `table.write_key_graphs` need torch to export the key graphs.
"""

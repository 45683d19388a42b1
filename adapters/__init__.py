"""Sources for real rigs and archives (installed as `streamlab.adapters`). Each adapter turns an
outside format into streamlab Frames; the generic NumPy/Zarr session reader lives in
`streamlab.sessions`."""

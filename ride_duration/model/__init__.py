"""The loaded model: the compiled predictor and its checks, loading a pickle safely, the holder it is swapped in."""

"""Engine layer: trainer, validator and predictor, and the run lifecycle around them (Ultralytics' ``engine``)."""

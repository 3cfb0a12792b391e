"""Data layer: SmartCash arrays, labels, the dataset Ultralytics trains on, and datasets on disk."""

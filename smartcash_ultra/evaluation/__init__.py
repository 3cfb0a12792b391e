"""Evaluation across scenarios: test-set scenarios, Ultralytics' validator over several models, reports.

Sits between ``engine`` (models, validator) and ``tools`` (the command line).
"""

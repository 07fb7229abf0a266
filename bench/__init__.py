"""Benchmarks: tfcore train steps side by side with Keras 3 (`python -m bench.run`).

Modules: `harness` (interleaved timing), `flops` (FLOPs from XLA's HLO or the TF
graph), `keras_models` (the Keras 3 equivalents), `kernels` (micro-benchmarks at
the models' shapes and the matmul peak), `run` (the models, modes, report and CLI).
"""

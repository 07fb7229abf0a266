"""The training machinery, apart from the building blocks.

| module | what |
| --- | --- |
| `loop` | `fit` / `Loop`: the compiled train loop, History, data position, NaN stops |
| `callbacks` | hooks: checkpoints, early stopping, LR on plateau, TensorBoard, progress |
| `checkpointing` | `tf.train.Checkpoint` + `CheckpointManager`, safe against kills |
| `compile` | `--jit=auto|on|off` -> `tf.function` (XLA or graph mode) |
| `distribute` | `tf.distribute` strategies, loss scaling, all-reduced gradients |
| `export` | SavedModel export |
| `lr_schedule` | learning-rate schedules inside the compiled step |
| `metrics_io` | atomic writes of metrics.json and other small files |
| `summaries` | TensorBoard event writing |
| `options` | one declaration per option: dataclass fields -> absl flags + checks |
| `run` | the run layer under every binary: workdir, config.json, resume contract, outputs |
| `binary` | `main()` of a training binary: flags -> config -> one call, errors as one line |
"""

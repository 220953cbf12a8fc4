"""The engine: a config in, a trained grid of runs and its workdir out.

    config_lib    the config schema, presets, variants, validation, the run grid
    problem       a model, its data and its loss (the door between models / tasks and the trainer)
    train         make_train(config) -> pure init / chunk / train / measure functions
    sweep         run_sweep: the grid as one vmapped, sharded program, chunked and checkpointed
    programs      the jitted programs of a sweep, shared by the sweep and the memory plan
    memory_plan   execution "auto": XLA's memory analysis -> vmap or groups of runs
    grid, grid_limits   growing a workdir's grid; size limits checked before compiling
    checkpoints, distributed, compile_cache, progress

May import: `rc_jax.routers`, `rc_jax.measurement`, `rc_jax.tasks`, `rc_jax.models` and
`rc_jax.outputs` (the sweep writes its tables and figures through it, the workdir's files are
what every later reader, e.g. `rc_jax.outputs.compare`, reads back).
"""

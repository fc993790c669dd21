"""Orchestration: submitit fan-out of training cells and the evaluation pool.

- `launch.grid.run_grid(cfg)` — the driver: data → training arrays → eval pool → report.
- `launch.task.run_train_task / run_eval_task` — one cell / pair in this process (what a job runs), through
  `launch.task.run_owned`, the one owner of a folder's life (DONE checked, settings, work, DONE written).
- `launch.jobs.TrainJob / EvalJob` — picklable, requeue-on-preemption submitit callables.
- `launch.executors.make_executor` — "slurm", "local" or "inprocess" by name.
- `launch.status.status_rows / format_status` — the state of every cell and pair.
"""

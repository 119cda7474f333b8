"""No notebook (run tooling). What keeps a training run safe and resumable: its folder and lock,
checkpoints, log, replay files, the evaluation process beside training, worker processes, and
the run-keeping that `train`'s loop calls (`keeping`)."""

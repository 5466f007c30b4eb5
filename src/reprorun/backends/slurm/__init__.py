"""The slurm backend: run the command as a Slurm batch job. ``sbatch`` submits,
``squeue``/``scontrol``/``sacct`` follow, ``scancel`` stops, and the job's output file is the
run's log.

The cluster shares this machine's file system (as Slurm clusters share home and project
folders): the job runs a copy of the project from a per-run folder (``jobs_dir/<run id>``),
uses the environment reprorun built here (its folders go first on PATH), and can log into
the run's store directly. The rendered script stays in that folder, next to the job's log, and
so does a copy of reprorun's in-run client (standard library only), first on the job's
PYTHONPATH: ``import reprorun`` works with whatever Python the node gives the command (a
``module load python`` in ``setup``, a node's own interpreter), as on the other backends.

The package, one module per concern: options (the backend config and its checks, the extra
#SBATCH lines), script (the sbatch script rendered from a config), commands (running Slurm's
client commands, with their errors in reprorun's words), job (Slurm's job states as run
statuses; following, reading and cancelling a job) and backend (the entry point ``create``: the
run's folder, its submission and attaching to a job).
"""

"""Scheduling the farm's jobs onto its GPU workers. Runs in the coordinator's process, on its event loop:
the worker pool, the job queue of each card model, where Ray places workers, bringing lost workers back,
and the consensus guard."""

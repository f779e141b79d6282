"""Stand-ins for what this machine cannot have. ``vllm/`` is importable as ``vllm`` when this folder is on
``PYTHONPATH`` (the batched workers' Ray processes), and as ``tests.standins.vllm`` in the test process."""

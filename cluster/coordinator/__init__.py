"""The coordinator: one per farm. Owns the operator's node accounts, follows the chain, runs each task's
steps (fetch, execute, commit, disclose, upload) and keeps every step durable across restarts."""

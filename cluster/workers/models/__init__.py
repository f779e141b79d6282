"""Models on disk and in memory: resolving ids to files, a shared download cache, warm-model LRU, builders."""

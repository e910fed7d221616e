"""Batch indexing of large corpora: `indexer index PROJECT INPUT... --output OUT`.

The work is cut into numbered blocks of documents (`readers`), each block is
indexed by a worker that loaded the project once (`work`), on this machine
(`local`) or on a Ray cluster (`ray_engine`), and each finished block is
written atomically (`writers`), so that a rerun resumes where a crash or a
Ctrl-C stopped. `runner` ties these together.
"""

"""One experiment runner for every domain: jobs, a store of their records, a queue, and reports.

A benchmark is a list of `Job`s (a method, its settings, a seed) and one function of its domain,
`run_job(job) -> record`. Everything else is shared:

- `jobs`: the job model; a job's key is a digest of its resolved config and evaluation settings, so a
  record is reused only for the very same run.
- `store`: where runs and their JSON records live, the records reused from another machine
  (`--records`), and claims (lock directories naming the worker's host and pid, kept alive by a
  heartbeat, so workers on several machines can share one store over a shared filesystem).
- `queue`: shards `I/N`, resume, a deadline (`--time-limit`), worker processes, failed jobs listed.
- `report`: seed aggregation (ddof = 1), the pair tests (Welch t with its df, an exact permutation
  test, Holm over a family), number formatting and Markdown tables.
- `protocol`: a protocol YAML file read and checked field by field before any job starts.
"""

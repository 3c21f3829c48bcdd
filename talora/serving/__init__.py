"""Many tasks served from one model: the batching engine (engine), the HTTP service over it (http)
and the training jobs that teach a running server a new task (jobs)."""

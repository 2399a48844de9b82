"""The job system: fair turns (`fairness`), the queue with its events and results, the Redis
wire and remote workers, the executor that runs work on the engine, and metrics.

It sits on top of the compute concerns (diffusion, upscale, imaging, prompt) and reaches
persistence only through the protocols in `store`, which storage's classes satisfy.
"""

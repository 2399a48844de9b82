"""Tessera's engine: prompt language, diffusion, upscaling, grids and the job queue.

Usable as a library with no bot at all. Importing this package must stay cheap: modules
that need torch import it themselves, so `engine.prompt` parses without loading torch.
"""

"""Tessera's engine: pure compute and the domain types, by concern.

- `engine.prompt`, `engine.request`: the prompt language and a resolved generation request
- `engine.diffusion`: models, the denoising loop, conditioning, samplers, safety
- `engine.upscale`: Real-ESRGAN, tiles, weights
- `engine.imaging`: encoding, grid, metadata, fetching and decoding image prompts
- `engine.jobs`: the job system (fair scheduler, queue, results, Redis wire, worker)
- `engine.errors`, `engine.redact`, `engine.device`: shared by all of them

Usable as a library with no bot at all, and it never imports storage, bot or commands
(import-linter checks it). Importing this package must stay cheap: modules that need torch
import it themselves, so `engine.prompt` parses without loading torch.
"""

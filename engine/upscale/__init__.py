"""Upscaling: Real-ESRGAN through spandrel, run in overlapping tiles, and its weight files.

Independent of diffusion: an upscale needs no diffusion model, only its own weights.
"""

"""Diffusion: loading a model, the denoising loop, prompt conditioning, samplers, previews,
seamless tiling and the safety checker.

Everything torch/diffusers touches for making images lives here; modules import torch
inside the functions that need it, so importing this package stays cheap.
"""

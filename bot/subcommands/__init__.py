"""`tessera` subcommands, one module each: `configure(parser)` and `main(args) -> int`.

`tessera` imports every one of these modules to build its parser, so modules import what
would load torch, diffusers, redis, discord, aiosqlite or Pillow inside `main` (each such
import marked `# heavy for the CLI:`), never at the top: `tessera --help` and `tessera parse`
stay fast and never load torch.
"""

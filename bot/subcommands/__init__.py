"""`tessera` subcommands, one module each: `configure(parser)` and `main(args) -> int`.

Modules import heavy dependencies (torch, diffusers) inside `main`, never at the top, so
`tessera --help` and `tessera parse` stay fast.
"""

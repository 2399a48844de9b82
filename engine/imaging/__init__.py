"""Image I/O: encoding for Discord and disk, the 2x2 grid, PNG metadata, and image prompts
(fetching links safely, decoding untrusted bytes within bounds).

Pure Pillow work, no torch: the bot and the job system both use it on any thread.
"""

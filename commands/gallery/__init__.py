"""The gallery: ❤️ Share and `/share` post an image to a server's gallery channel; the buttons
on a gallery post (🔁 Remix, 🎲 Same prompt, 📋 Prompt, 👍 Like, 🗑 Remove) and the Remix form;
`/prompts search` and `/prompts top` to browse what was shared.

One feature in three modules: `share` (posting), `posts` (a post's buttons and the Remix form),
`prompts` (search and top lists, paged). The Discord-free rules and the post itself are the
bot's (`bot.gallery`), which the web gallery shares.
"""

from __future__ import annotations

from bot.client import TesseraClient
from commands.gallery.posts import REMIX_MODAL, GalleryButton, on_remix_submit, post_buttons
from commands.gallery.prompts import PageButton, prompts
from commands.gallery.share import SHARE, ShareButton, share

HELP = {
    "commands": "`/share job index [title]` — post one image to this server's gallery channel (❤️ Share does the same)\n"
                "`/prompts search query [author] [sort]` — search the shared prompts: words, \"a phrase\", word*, "
                "a OR b, -word\n"
                "`/prompts top [period]` — the most liked shared images today, this week or of all time",
    "buttons": "**❤️ Share** under an upscale: post it to the gallery\n"
               "**On a gallery post** 🔁 Remix (edit the prompt) · 🎲 Same prompt · 📋 Prompt · 👍 Like · 🗑️ Remove",
}


def setup(client: TesseraClient) -> None:
    client.tree.add_command(share)
    client.tree.add_command(prompts)
    client.buttons.add(ShareButton, GalleryButton, PageButton)
    client.buttons.place("upscale", row=1, order=0, make=lambda job_id, _: [ShareButton(SHARE, job_id, 0)])
    client.buttons.place("gallery", row=0, order=0, make=lambda entry_id, likes: post_buttons(int(entry_id), likes))
    client.buttons.form(REMIX_MODAL, on_remix_submit)

"""The web gallery: a read-only website of the images shared to the gallery (issue 19).

`start_web(data_dir, host=…, port=…)` serves it (the bot does when WEB_PORT is set;
`tessera web` runs it alone). `server` holds the routes, `pages` the HTML, `thumbs` the
WebP thumbnail cache, `ratelimit` the per-address token bucket.
"""

from bot.web.server import GalleryWeb, WebOptions, WebServer, options_from, start_web

__all__ = ["GalleryWeb", "WebOptions", "WebServer", "options_from", "start_web"]

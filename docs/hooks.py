"""MkDocs hook: the settings page is generated from the configuration dataclasses at build time."""

from aetnet.config.reference import settings_markdown

MARKER = "<!-- settings-table -->"


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, settings_markdown())
    return markdown

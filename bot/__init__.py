"""Tessera's Discord side: the client, buttons, rendering, configuration and entry points."""

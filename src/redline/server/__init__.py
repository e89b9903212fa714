"""OpenAI-compatible HTTP API over redline strategies (`redline serve`)."""

from redline.server.app import create_app
from redline.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]

"""The app's declared settings (see :mod:`krait.config.settings`)."""

from krait.config.app import AppConfig, find_config_file, load_app
from krait.config.settings import KINDS, SETTINGS, Setting, parse_env, parse_memory

__all__ = [
    "KINDS",
    "SETTINGS",
    "AppConfig",
    "Setting",
    "find_config_file",
    "load_app",
    "parse_env",
    "parse_memory",
]

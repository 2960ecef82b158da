"""User-facing errors: one clear line, no traceback unless --debug."""


class PefthubError(Exception):
    """An error caused by input or environment, shown to the user as one line."""


class PluginError(PefthubError):
    """A plugin failed to load or registered something invalid; the message names the plugin."""


class ConfigError(PefthubError):
    """A config value, file or budget is invalid; the message names the field or file."""


class UnsupportedError(PefthubError):
    """A method/trainer/task combination that cannot work, with the reason."""

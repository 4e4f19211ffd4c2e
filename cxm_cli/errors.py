"""The one error family for problems a user can fix.

Core code raises these deep down; the CLI edge turns them into one red line on
stderr and a non-zero exit code. Anything else is a bug and keeps its traceback.
"""


class CxmError(Exception):
    """A problem the user can fix: bad input, missing workspace, bad config."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class WorkspaceNotFound(CxmError):
    pass


class ConfigError(CxmError):
    """cxm.toml or a sequence file says something cxm cannot use."""


class NotFound(CxmError):
    """A contact, template, sequence or batch named by the user does not exist."""


class InputError(CxmError):
    """A file or value handed to a command cannot be read."""


class TemplateError(CxmError):
    """A message template cannot be rendered for a contact."""


class ChannelError(CxmError):
    """A channel refused or failed to send.

    ``transient`` says whether a later retry may succeed (HTTP 429/5xx, SMTP 4xx,
    timeouts); ``opt_out`` says the provider reported the recipient unsubscribed.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        opt_out: bool = False,
        provider_code: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, hint=hint)
        self.transient = transient
        self.opt_out = opt_out
        self.provider_code = provider_code

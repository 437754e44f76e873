"""What every `credence` command shares: the consoles, the error contract, the runtime.

Below both `credence.cli` (the package: the root app, which registers the sub-apps) and each
sub-app module, so no CLI module imports another. Cheap on purpose: it imports only typer, rich
and the settings; anything heavier (the runtime, the ledger, torch through the watermark) is
imported where it is used, so `credence --help` does not wait for it.

Exit codes: 0 success, 2 bad usage or bad input (a one-line reason on stderr, no traceback),
130 interrupted.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console

from ..settings import Settings, SettingsError

if TYPE_CHECKING:
    from ..runtime import Runtime

console = Console()
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2

F = TypeVar("F", bound=Callable[..., Any])


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types a user's input or setup can cause: a one-line message, exit 2.

    Evaluated only when an exception is on its way out, so the imports cost nothing on success.
    """
    from generator.errors import GeneratorError
    from moderation.errors import ModerationError
    from provenance.errors import ProvenanceError

    return (ProvenanceError, SettingsError, ModerationError, GeneratorError)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handles_errors(func: F) -> F:
    """Map user-facing errors to exit 2 with their message; let bugs surface as bugs."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except user_errors() as exc:
            raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def runtime(actor: str = "cli") -> Runtime:
    """The runtime for the environment's settings (imported late: it loads the ledger and detector)."""
    from ..runtime import Runtime

    return Runtime(Settings.from_env(), actor=actor)

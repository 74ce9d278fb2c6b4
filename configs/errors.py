"""The one error type for configurations a user must fix."""

from pydantic import ValidationError


class ConfigError(ValueError):
    """A configuration a user must fix; `problems` holds one message per offending element."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))

    def __reduce__(self) -> tuple[type["ConfigError"], tuple[list[str]]]:
        """Keep `problems` a list when the error crosses a Ray process boundary."""
        return (type(self), (self.problems,))


def validation_problems(exc: ValidationError, source: str) -> list[str]:
    """pydantic's errors as `source: field.path: message` lines a user can act on."""
    return [
        f"{source}: {'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
        for e in exc.errors()
    ]

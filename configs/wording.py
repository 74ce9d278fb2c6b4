"""How messages list things, the same in every layer that words one."""


def joined(items: list[str], last: str) -> str:
    """ "a, b or c" (`last` "or"), "a and b" (`last` "and"), or the one item."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"

"""--tune: which options a run's search covers, checked against what each method declares searchable."""

from __future__ import annotations

from dataclasses import fields

from ..errors import UserError


def check_tune(tune: list[str], methods: list[str]) -> None:
    """--tune names: 'opt' (searched for every method: each must declare it searchable) or 'method.opt'."""
    from ..methods import get

    for name in tune:
        method, _, option = name.rpartition(".")
        targets = [method] if method else methods
        if method and method not in methods:
            raise UserError(f"--tune {name}: method '{method}' is not among --methods ({', '.join(methods)})")
        for m in targets:
            space = get(m).search
            if option not in space:
                has = {f.name for f in fields(get(m).config_cls)}
                why = "does not search it" if option in has else "has no such option"
                raise UserError(
                    f"--tune {name}: {m} {why}; {m} searches: {', '.join(space)}"
                    + ("" if method else f" (name one method's option as {m}.<option>)")
                )


def tuned_options(tune: list[str], method: str) -> list[str]:
    """The options --tune searches for one method."""
    out = []
    for name in tune:
        m, _, option = name.rpartition(".")
        if m in ("", method) and option not in out:
            out.append(option)
    return out

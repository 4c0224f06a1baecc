"""Method names and their options with the published defaults (torch-free: panels import it)."""

METHODS = ("none", "tent", "vptta", "grata", "dyna")
METHOD_OPTIONS = {
    "none": {},
    "tent": {"lr": 1e-3, "steps": 1, "episodic": False},
    "vptta": {"alpha": 0.01, "lr": 0.05, "memory_size": 40, "neighbours": 16, "warm_n": 5, "iters": 1},
    "grata": {"lr": 1e-4, "seed": 0},
    "dyna": {"alpha": 0.01, "lr": 0.05, "memory_size": 40, "neighbours": 16, "warm_n": 5, "iters": 1,
             "keep_case": True},
}
NIGHT_OPTIONS = {"iterations": 60, "batch": 8, "lr": 1e-4, "teacher_momentum": 0.99,
                 "global_momentum": 0.5, "confidence": 0.8, "seed": 0}


def check_options(method: str, options: dict | None) -> dict:
    """The method's defaults updated by ``options``; unknown methods/options are an InputError."""
    from ..errors import InputError

    if method not in METHODS:
        raise InputError(f"unknown method '{method}'; use one of {', '.join(METHODS)}")
    opts = dict(METHOD_OPTIONS[method])
    unknown = set(options or {}) - set(opts)
    if unknown:
        raise InputError(f"unknown option(s) {sorted(unknown)} for {method}; it takes {sorted(opts) or 'none'}")
    opts.update(options or {})
    return opts

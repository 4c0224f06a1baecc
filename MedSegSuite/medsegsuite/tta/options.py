"""Method names and their options with the published defaults: the one source of TTA options (the
task schemas, the CLI's ``-o key=value``, the panel's option help and the evaluation all use it).
Torch-free: panels import it."""

METHODS = ("none", "tent", "vptta", "grata", "dyna")
# How a method is applied to a volume (not its maths): ``batch`` slices of the volume per step (BN
# statistics and the update from them together; 1 = the papers' image-by-image stream), the update on
# every ``adapt_every``-th slice of the batch (then the whole batch is predicted; the cost lever), and
# the safety ``gate`` (tta/gate.py: keep the source prediction when adaptation is not trusted).
# VPTTA's adapt_every 4 and GraTa's 16 (were 2 and 8): benchmarks/tta_adapt_every.py measured the same
# Dice to 1e-4 on six shifted liver/brain cases at ~half the time (benchmarks/results/tta_adapt_every.md).
VOLUME_OPTIONS = {"batch": 16, "gate": True}
METHOD_OPTIONS = {
    "none": {},
    "tent": {"lr": 1e-3, "steps": 1, "episodic": False, **VOLUME_OPTIONS},
    "vptta": {"alpha": 0.01, "lr": 0.05, "memory_size": 40, "neighbours": 16, "warm_n": 5, "iters": 1,
              **VOLUME_OPTIONS, "adapt_every": 4},
    "grata": {"lr": 1e-4, "seed": 0, **VOLUME_OPTIONS, "adapt_every": 16},
    "dyna": {"alpha": 0.01, "lr": 0.05, "memory_size": 40, "neighbours": 16, "warm_n": 5, "iters": 1,
             **VOLUME_OPTIONS, "adapt_every": 2, "keep_case": True},
}
SCHEDULE_KEYS = ("batch", "adapt_every", "gate")


def schedule(options: dict) -> dict:
    """The per-volume schedule part of checked options: batch, adapt_every (1 if the method has none), gate."""
    return {"batch": int(options.get("batch", 1)), "adapt_every": int(options.get("adapt_every", 1)),
            "gate": bool(options.get("gate", False))}
NIGHT_OPTIONS = {"iterations": 60, "batch": 8, "lr": 1e-4, "teacher_momentum": 0.99,
                 "global_momentum": 0.5, "confidence": 0.8, "seed": 0}


def _typed(what: str, defaults: dict, options: dict | None) -> dict:
    """``defaults`` updated by ``options``; unknown names and values of the wrong type are an InputError."""
    from ..errors import InputError

    if options is not None and not isinstance(options, dict):
        raise InputError(f"{what} options must be a JSON object of name: value, got {options!r}")
    unknown = set(options or {}) - set(defaults)
    if unknown:
        raise InputError(f"unknown option(s) {sorted(unknown)} for {what}; it takes {sorted(defaults) or 'none'}")
    out = dict(defaults)
    for k, v in (options or {}).items():
        d = defaults[k]
        ok = (isinstance(v, bool) if isinstance(d, bool) else
              isinstance(v, int) and not isinstance(v, bool) if isinstance(d, int) else
              isinstance(v, (int, float)) and not isinstance(v, bool))
        if not ok or (not isinstance(d, bool) and v < 0):
            kind = "true or false" if isinstance(d, bool) else "an integer >= 0" if isinstance(d, int) else "a number >= 0"
            raise InputError(f"option '{k}' of {what} must be {kind}, got {v!r}")
        out[k] = float(v) if isinstance(d, float) else v
    return out


def check_options(method: str, options: dict | None) -> dict:
    """The method's defaults updated by ``options``; unknown methods/options or ill-typed values are
    an InputError."""
    from ..errors import InputError

    if method not in METHODS:
        raise InputError(f"unknown method '{method}'; use one of {', '.join(METHODS)}")
    return _typed(method, METHOD_OPTIONS[method], options)


def check_night_options(options: dict | None) -> dict:
    """DyNA night options (NIGHT_OPTIONS) with the same checks."""
    return _typed("the DyNA night", NIGHT_OPTIONS, options)

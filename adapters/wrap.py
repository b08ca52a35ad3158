"""Turn a plain cross-entropy function into an adapter.

The function has ``torch.nn.functional.cross_entropy``'s signature::

    def my_ce(input, target, weight=None, ignore_index=-100, reduction="mean",
              label_smoothing=0.0): ...

and works on torch tensors, JAX arrays or NumPy arrays. Keyword parameters
are passed by these names; parameters the function does not have are passed
only when a case needs a non-default value, and then the case is reported
``unsupported`` (the claim is "inferred from the signature").

Three factories, usable as calls or as decorators (the result is still callable
as the function)::

    adapter = from_torch(my_ce, unsupported={"label_smoothing", "float16"})

    @from_jax(unsupported={"weight"})
    def my_ce(input, target, weight=None, ...): ...

    adapter = from_numpy(my_ce, grad=my_ce_grad)   # grad=None: loss only

- ``from_torch``: gradient by autograd; option ``device`` ('cpu', 'cuda', 'mps'). A loss in
  another dtype (a fused kernel's float32 loss of half-precision logits) is rounded to the
  case's dtype (``harness.adapters.torch_ce.to_numpy``).
- ``from_jax``: gradient by ``jax.vjp``; jitted, or eager when the function cannot
  be traced (``jit=False`` forces eager). Called on padded shapes, with
  ignore_index and label_smoothing as traced values, where the semantics allow,
  so a run compiles few programs (``harness.adapters.jax_function`` says when
  not); ``pad=False`` calls every case on its exact shape.
- ``from_numpy``: no autodiff, so pass ``grad=fn`` with the same signature plus
  ``grad_output=None`` (returning d loss / d input), or the adapter is checked
  for the loss only and the report says so. The arrays come in the case's dtype,
  bfloat16 as ml_dtypes' ``bfloat16`` arrays (not float32), and a function (or
  grad function) with a ``dtype`` parameter gets the dtype's name. Results are
  cast to the case's dtype (NumPy promotes readily: ``math.log`` returns a
  Python float).

All three take ``library=`` and ``version=`` to name what is wrapped:
``from_jax(keras_ce, library="keras")`` reports "keras 3.15.1 (jax 0.10.2)" (the
version of an installed library is looked up); without them the report names the
function and the framework.

``--adapter ./file.py:my_ce`` on an undecorated function calls ``adapt``, which
picks the framework from the modules the function's globals refer to (torch,
jax, else numpy) unless told with ``@framework=torch``. Command-line options:
``framework``, ``device``, ``jit``, ``pad``, ``library``, ``version`` and
``unsupported`` (names joined by ``+``), e.g.
``--adapter ./my_ce.py:my_ce@framework=torch,unsupported=label_smoothing+float16``.

A gradient that cannot take ``grad_output`` (declared ``unsupported``, or a NumPy
grad function without the parameter) does not cost those cases: their loss is
still checked, and the report notes that the gradient was not.

Declaring what is missing: ``unsupported=`` takes feature names from
``harness.FEATURES`` and dtype names; raising ``NotImplementedError`` (or
``harness.Unsupported``) from the function has the same effect case by case.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from harness.adapters import FEATURES, Adapter, CallInputs, Output, Unsupported
from harness.adapters.jax_ce import keep_compiled_programs
from harness.adapters.jax_function import JaxCaller
from harness.adapters.torch_ce import TorchAdapter, loss_and_grad, to_torch
from harness.dtypes import DTYPE_NAMES, cast

FRAMEWORKS = ("torch", "jax", "numpy")

#: keyword parameter -> (its default, the features a case needs it for)
PARAMETERS: dict[str, tuple[object, tuple[str, ...]]] = {
    "weight": (None, ("weight",)),
    "ignore_index": (-100, ("ignore_index",)),
    "reduction": ("mean", ("reduction_none", "reduction_sum")),
    "label_smoothing": (0.0, ("label_smoothing",)),
}


def check_unsupported(names: Iterable[str], where: str) -> frozenset[str]:
    """Validate declared names (features or dtypes); ValueError names the bad one."""
    names = frozenset(names)
    bad = sorted(names - set(FEATURES) - set(DTYPE_NAMES))
    if bad:
        raise ValueError(
            f"{where}: unsupported={bad} not known; expected feature names "
            f"({', '.join(FEATURES)}) or dtypes ({', '.join(DTYPE_NAMES)})"
        )
    return names


def installed_version(library: str) -> str:
    """The version of ``library``: its imported module's ``__version__`` (what runs), else
    its installed distribution's, else '?'."""
    module = sys.modules.get(library)
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _location(fn: Callable) -> str:
    """'file.py:line' of a function's (or a loss module class's) definition, or its name."""
    code = getattr(fn, "__code__", None)
    if code is None or getattr(fn, "__wrapped__", None) is not None:
        source = getattr(fn, "__wrapped__", fn)
        if not (inspect.isclass(source) or inspect.isroutine(source)):
            source = type(source)  # a callable object: where its class is defined
        try:
            lines = inspect.getsourcelines(source)
            return f"{Path(inspect.getsourcefile(source) or '?').name}:{lines[1]}"
        except (TypeError, OSError):
            return getattr(fn, "__qualname__", None) or repr(fn)[:60]
    return f"{Path(code.co_filename).name}:{code.co_firstlineno}"


def is_torch_module_class(obj: object) -> TypeGuard[type]:
    """Whether ``obj`` is a subclass of ``torch.nn.Module`` (torch is not imported to tell)."""
    return inspect.isclass(obj) and any(
        c.__name__ == "Module" and c.__module__ == "torch.nn.modules.module" for c in obj.__mro__
    )


def module_loss(cls: type) -> Callable:
    """A function with F.cross_entropy's parameters for a loss module class, as kernel
    libraries ship their losses (options in the constructor, ``forward(input, target)``):
    each call constructs ``cls`` with the call's options that its constructor takes, and
    calls it. Its signature is ``(input, target, <those options>)``, so what the constructor
    lacks is inferred ``unsupported`` as for a function."""
    try:
        init = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        init = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in init):
        options = [inspect.Parameter("options", inspect.Parameter.VAR_KEYWORD)]
    else:
        options = [
            inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default)
            for p in init
            if p.name in PARAMETERS and p.kind in keyword
        ]

    def loss(input: Any, target: Any, **given: Any) -> Any:
        return cls(**given)(input, target)

    functools.update_wrapper(loss, cls, updated=())
    tensors = inspect.Parameter.POSITIONAL_OR_KEYWORD
    loss.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("input", tensors), inspect.Parameter("target", tensors), *options]
    )
    return loss


def _accepted(fn: Callable) -> set[str] | None:
    """Names of F.cross_entropy's keyword parameters ``fn`` accepts; None: all (**kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params} & set(PARAMETERS)


class FunctionAdapter(Adapter):
    """An adapter around a function with F.cross_entropy's signature; callable as the function.

    Subclasses say how to call it (``framework``) and how the gradient is taken.
    """

    framework = "numpy"

    def __init__(
        self,
        fn: Callable,
        *,
        name: str | None = None,
        unsupported: Iterable[str] = (),
        declared_by: str | None = None,
        library: str | None = None,
        version: str | None = None,
        semantics: str = "torch",
    ) -> None:
        self.fn = fn
        self.semantics = semantics
        functools.update_wrapper(self, fn, updated=())
        self.library = library
        self.library_version = version
        fallback: str = getattr(fn, "__name__", "function")
        self.name = name or fallback
        self.location = _location(fn)
        by = declared_by or f"from_{self.framework}(unsupported=...) for {self.location}"
        declared = check_unsupported(unsupported, by)
        self.accepts = _accepted(fn)
        inferred: frozenset[str] = frozenset()
        if self.accepts is not None:
            missing = set(PARAMETERS) - self.accepts
            inferred = frozenset(f for p in missing for f in PARAMETERS[p][1])
        self.unsupported = declared | inferred | self._framework_unsupported()
        sources = []
        if declared:
            sources.append(f"{', '.join(sorted(declared))} declared by {by}")
        if inferred - declared:
            signature = f"{getattr(fn, '__name__', self.name)}{inspect.signature(fn)}"
            sources.append(
                f"{', '.join(sorted(inferred - declared))} inferred from the signature "
                f"{signature} at {self.location}"
            )
        extra = self._framework_unsupported() - declared
        if extra:
            sources.append(f"{', '.join(sorted(extra))}: {self._framework_note()}")
        self.unsupported_source = "; ".join(sources) or "declared by the adapter"
        self.requires = (self.framework,)

    def _framework_unsupported(self) -> frozenset[str]:
        return frozenset()

    def _framework_note(self) -> str:
        return ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def options(self, inputs: CallInputs) -> dict[str, Any]:
        """Keyword arguments for this call; Unsupported when the function lacks a needed one."""
        values = {
            "ignore_index": int(inputs.ignore_index),
            "reduction": inputs.reduction,
            "label_smoothing": float(inputs.label_smoothing),
        }
        if self.accepts is None:
            return values
        out = {}
        for key, value in values.items():
            if key in self.accepts:
                out[key] = value
            elif value != PARAMETERS[key][0]:
                raise Unsupported(f"{self.name} has no parameter {key!r} (needed: {value!r})")
        return out

    def _pass_weight(self, weight: Any) -> dict[str, Any]:
        if self.accepts is not None and "weight" not in self.accepts:
            if weight is not None:
                raise Unsupported(f"{self.name} has no parameter 'weight'")
            return {}
        return {"weight": weight}

    def version(self) -> str:
        """What is wrapped: 'keras 3.15.1 (jax 0.10.2)' with ``library=`` and ``version=``
        (the version of an installed library is looked up), else the function and where it
        is defined, on the framework: 'my_ce (my_ce.py:3) on jax 0.10.2'."""
        on = f"{self.framework} {installed_version(self.framework)}"
        if self.library is None and self.library_version is None:
            return f"{getattr(self.fn, '__qualname__', self.name)} ({self.location}) on {on}"
        library = self.library or self.name
        version = self.library_version or installed_version(library)
        if library == self.framework:
            return f"{library} {version}"
        return f"{library} {version} ({on})"

    def load(self) -> None:
        __import__(self.framework)


class TorchFunction(FunctionAdapter):
    """A torch function; gradient by autograd."""

    framework = "torch"

    def __init__(self, fn: Callable, *, device: str = "cpu", **kwargs: Any) -> None:
        if is_torch_module_class(fn):  # a loss module: constructed with each call's options
            fn = module_loss(fn)
        super().__init__(fn, **kwargs)
        self._device = str(device)

    def load(self) -> None:
        TorchAdapter(self._device).load()

    def device(self) -> str:
        return self._device

    def run(self, inputs: CallInputs) -> Output:
        import torch

        options = self.options(inputs)
        x, t, weight, grad_output = to_torch(inputs, self._device)
        loss = self.fn(x, t, **self._pass_weight(weight), **options)
        if not isinstance(loss, torch.Tensor):
            raise TypeError(
                f"{self.name} returned a {type(loss).__name__}: expected a torch.Tensor"
            )
        if inputs.want_grad and not loss.requires_grad:
            raise TypeError(
                f"{self.name}'s loss does not require grad: it left autograd's graph "
                "(detached, or computed outside torch?)"
            )
        return loss_and_grad(loss, x, inputs, grad_output)


class JaxFunction(FunctionAdapter):
    """A JAX function; gradient by jax.vjp, jitted unless it cannot be traced; called on
    padded shapes with traced options where the semantics allow (``harness.adapters.jax_function``)."""

    framework = "jax"

    def __init__(
        self, fn: Callable, *, jit: bool | str = True, pad: bool | str = True, **kwargs: Any
    ) -> None:
        super().__init__(fn, **kwargs)
        self.jit = _flag(jit)
        self.pad = _flag(pad)
        self.requires = ("jax",)
        # one stable callable, so jitted programs are cached across calls
        self._call = functools.partial(_call_jax, self)
        ignores = (self.accepts is None or "ignore_index" in self.accepts) and (
            "ignore_index" not in self.unsupported
        )
        self._caller = JaxCaller(self._call, ignores=ignores, pad=self.pad, jit=self.jit)

    def load(self) -> None:
        keep_compiled_programs()

    def run(self, inputs: CallInputs) -> Output:
        if self.accepts is not None and "weight" not in self.accepts and inputs.weight is not None:
            raise Unsupported(f"{self.name} has no parameter 'weight'")
        return self._caller(inputs, self.options(inputs))


def _flag(value: bool | str) -> bool:
    """A boolean option, given in Python or on the command line ('0', 'false', 'no': off)."""
    return str(value).lower() not in ("0", "false", "no")


def _call_jax(adapter: JaxFunction, x: Any, target: Any, weight: Any, **options: Any) -> Any:
    return adapter.fn(x, target, **adapter._pass_weight(weight), **options)


class NumpyFunction(FunctionAdapter):
    """A NumPy function; the gradient from ``grad`` or none (loss only)."""

    framework = "numpy"

    def __init__(self, fn: Callable, *, grad: Callable | None = None, **kwargs: Any) -> None:
        self.grad_fn = grad
        super().__init__(fn, **kwargs)
        self._dtype_kw = "dtype" in _explicit_parameters(fn)
        self._grad_dtype_kw = grad is not None and "dtype" in _explicit_parameters(grad)

    def _framework_unsupported(self) -> frozenset[str]:
        if self.grad_fn is None:
            return frozenset({"grad"})
        if "grad_output" not in set(_accepted_all(self.grad_fn)):
            return frozenset({"grad_output"})
        return frozenset()

    def _framework_note(self) -> str:
        if self.grad_fn is None:
            return f"{self.name} is checked for the loss only (from_numpy without grad=)"
        return "the grad function takes no 'grad_output'"

    def run(self, inputs: CallInputs) -> Output:
        options = self.options(inputs)
        logits, target, weight_array, grad_output = _in_dtype(inputs)
        args = (logits, target)
        weight = self._pass_weight(weight_array)
        dtype = {"dtype": inputs.dtype} if self._dtype_kw else {}
        value = self.fn(*args, **weight, **options, **dtype)
        loss = cast(np.asarray(value, dtype=np.float64), inputs.dtype)
        grad = None
        if inputs.want_grad and self.grad_fn is not None:
            extra = {} if grad_output is None else {"grad_output": grad_output}
            if self._grad_dtype_kw:
                extra["dtype"] = inputs.dtype
            g = self.grad_fn(*args, **weight, **options, **extra)
            grad = cast(np.asarray(g, dtype=np.float64), inputs.dtype)
        return Output(loss=loss, grad=grad)


def _in_dtype(inputs: CallInputs) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """logits, target, weight and grad_output as a NumPy function gets them: in the case's
    dtype, bfloat16 as ml_dtypes' array (not the float32 carrier), so a function that
    computes in its input's dtype computes in bfloat16."""
    arrays = (inputs.logits, inputs.target, inputs.weight, inputs.grad_output)
    if inputs.dtype != "bfloat16":
        return arrays
    try:
        import ml_dtypes  # installed with JAX; only bfloat16 cases need it
    except ImportError:
        raise Unsupported(
            "bfloat16: from_numpy passes bfloat16 arrays as ml_dtypes.bfloat16 "
            "(pip install ml_dtypes)"
        ) from None

    def real(a: Any) -> Any:
        floating = isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)
        return a.astype(ml_dtypes.bfloat16) if floating else a

    logits, target, weight, grad_output = (real(a) for a in arrays)
    return logits, target, weight, grad_output


def _explicit_parameters(fn: Callable) -> set[str]:
    """The names of ``fn``'s parameters (not those a ``**kwargs`` would take)."""
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _accepted_all(fn: Callable) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ["grad_output"]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return ["grad_output"]
    return [p.name for p in params]


def _factory(cls: type[FunctionAdapter]) -> Callable[..., Any]:
    def make(fn: Callable | None = None, **kwargs: Any) -> Any:
        if fn is None:  # used as @from_x(...)
            return lambda f: cls(f, **kwargs)
        return cls(fn, **kwargs)

    make.__name__ = f"from_{cls.framework}"
    make.__doc__ = (
        f"``from_{cls.framework}(fn, *, name=None, unsupported=(), ...)`` or "
        f"``@from_{cls.framework}(...)``: a {cls.__name__} adapter around ``fn``."
    )
    return make


from_torch = _factory(TorchFunction)
from_jax = _factory(JaxFunction)
from_numpy = _factory(NumpyFunction)

CLASSES: dict[str, type[FunctionAdapter]] = {
    "torch": TorchFunction,
    "jax": JaxFunction,
    "numpy": NumpyFunction,
}


def _globals_of(fn: Callable) -> dict[str, Any]:
    """The globals of a function, of a partial's function, or of a callable object's
    ``__call__``: where the modules it uses are named."""
    for _ in range(8):  # a partial of a partial ...
        found = getattr(fn, "__globals__", None)
        if found is not None:
            return found
        inner = getattr(fn, "func", None)  # functools.partial
        if inner is None and not inspect.isclass(fn):  # a callable object: its class's method
            inner = next(
                (vars(k)["__call__"] for k in type(fn).__mro__ if "__call__" in vars(k)), None
            )
        if inner is None or inner is fn:
            break
        fn = inner
    return {}


def detect_framework(fn: Callable) -> str:
    """'torch', 'jax' or 'numpy', from the modules ``fn``'s globals refer to.

    ``import torch``, ``import torch.nn.functional as F`` or ``from jax import numpy``
    put a module (or a function of one) in the globals; a function whose module
    uses both torch and jax must be told which (``@framework=...``).
    """
    roots = set()
    for value in _globals_of(fn).values():
        if isinstance(value, types.ModuleType):
            module = value.__name__
        else:
            module = getattr(value, "__module__", None) or ""
        roots.add(module.split(".")[0])
    found = [f for f in ("torch", "jax", "jaxlib") if f in roots]
    found = ["jax" if f == "jaxlib" else f for f in found]
    found = sorted(set(found))
    if len(found) > 1:
        raise ValueError(
            f"{_location(fn)}: {getattr(fn, '__name__', fn)!r} refers to both torch and jax; "
            "say which with --adapter SPEC@framework=torch (or jax)"
        )
    return found[0] if found else "numpy"


def adapt(obj: Callable | Adapter, *, name: str | None = None, **options: str) -> Adapter:
    """An adapter for a plain function (what ``--adapter file.py:fn`` loads).

    ``options`` are command-line strings: ``framework`` (torch, jax, numpy; default:
    detected), ``unsupported`` (names joined by '+'), ``library`` and ``version``,
    ``device`` (torch), ``jit`` and ``pad`` (jax).
    """
    if isinstance(obj, Adapter):
        return obj
    framework = options.pop("framework", None) or (
        "torch" if is_torch_module_class(obj) else detect_framework(obj)
    )
    if framework not in CLASSES:
        raise ValueError(f"framework={framework!r}: expected one of {', '.join(FRAMEWORKS)}")
    raw = options.pop("unsupported", "")
    unsupported = [n for n in raw.replace(",", "+").split("+") if n]
    allowed = {"torch": {"device"}, "jax": {"jit", "pad"}, "numpy": set()}[framework]
    allowed |= {"library", "version"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"option(s) {unknown} do not apply to a {framework} function; "
            f"expected framework, unsupported{''.join(', ' + a for a in sorted(allowed))}"
        )
    return CLASSES[framework](
        obj,
        name=name,
        unsupported=unsupported,
        declared_by="the command line (@unsupported=...)",
        **options,
    )

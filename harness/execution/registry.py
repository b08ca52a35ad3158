"""Finding adapters by name: ``--adapter SPEC``.

A SPEC resolves, in this order:

1. a built-in name (``BUILTIN``), e.g. ``numpy``;
2. an entry point named SPEC in the group ``lossconf.adapters``;
3. ``path/to/file.py[:attr]`` (anything ending in ``.py`` or containing a ``/``);
4. a bare name ``mine`` (no dot) finds ``./mine.py`` in the working directory,
   which wins over an importable module of the same name;
5. ``package.module[:attr]``, importable from sys.path or the working directory.

Options follow ``@`` (or a last ``:`` when they contain ``=``):
``torch@device=cuda,deterministic=1`` or ``torch:device=cuda`` pass
``device='cuda'`` (and ``deterministic='1'``) to the adapter's constructor. One option is
the harness's own, for every adapter: ``semantics=keras`` sets the dialect the adapter is
judged under (``harness.oracle.dialect``), in place of its ``semantics`` attribute.
Without ``:attr`` a module must define ``adapter`` (an Adapter instance or
class), exactly one Adapter subclass, or a function named ``cross_entropy``. The object may
also be a plain function with F.cross_entropy's signature (or a callable object, a partial)
or a torch loss module class: ``harness.adapters.wrap.adapt`` wraps it (options
``framework``, ``unsupported``, ``device``, ``jit``). Every loading error says
what was tried and lists the known adapters.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType

from harness.adapter_names import file_adapter_name, names_file, split_target
from harness.adapters import Adapter
from harness.adapters.wrap import adapt, is_torch_module_class
from harness.errors import AdapterLoadError
from harness.oracle.dialect import dialect_named

ENTRY_POINT_GROUP = "lossconf.adapters"

#: name -> "module:attr" of the adapters that ship with lossconf
BUILTIN: dict[str, str] = {
    "numpy": "harness.adapters.numpy_ref:NumpyAdapter",
    "torch": "harness.adapters.torch_ce:TorchAdapter",
    "torch-module": "harness.adapters.torch_ce:TorchModuleAdapter",
    "jax": "harness.adapters.jax_ce:JaxAdapter",
    "optax": "harness.adapters.optax_raw:OptaxAdapter",
    "onnx": "harness.adapters.onnx_ce:OnnxAdapter",
    "onnxruntime": "harness.adapters.onnx_ce:OnnxRuntimeAdapter",
    "keras": "harness.adapters.keras_loss:KerasAdapter",
    "tensorflow": "harness.adapters.tensorflow_raw:TensorFlowAdapter",
    "torch-vocab-split": "harness.adapters.torch_vocab_parallel:TorchVocabParallel",
    "megatron": "harness.adapters.megatron_ce:MegatronVocabParallel",
    "paddle": "harness.adapters.paddle_ce:PaddleAdapter",
    "mlx": "harness.adapters.mlx_ce:MlxAdapter",
    "tinygrad": "harness.adapters.tinygrad_ce:TinygradAdapter",
}

#: import name -> distribution name, where they differ (for the install command)
DISTRIBUTIONS: dict[str, str] = {"paddle": "paddlepaddle"}


@dataclass
class Spec:
    text: str
    target: str
    options: dict[str, str]  # for the adapter's constructor
    semantics: str | None = None  # the harness's own option: the dialect, when given
    name: str | None = None  # the harness's own option: the adapter's name, when given


def parse_spec(text: str) -> Spec:
    target, _, opts = text.partition("@")
    head, colon, tail = target.rpartition(":")
    if not opts and colon and "=" in tail:  # the 'torch:device=cuda' spelling
        target, opts = head, tail
    options: dict[str, str] = {}
    for item in filter(None, opts.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise AdapterLoadError(f"adapter option {item!r} in {text!r}: expected key=value")
        options[key.strip()] = value.strip()
    semantics = options.pop("semantics", None)
    name = options.pop("name", None)
    if name is not None and not name:
        raise AdapterLoadError(f"adapter option name in {text!r}: expected a name")
    if semantics is not None:
        try:
            dialect_named(semantics, f"adapter option semantics in {text!r}")
        except ValueError as e:
            raise AdapterLoadError(str(e)) from None
    return Spec(text, target, options, semantics, name)


def known_names() -> list[str]:
    names = list(BUILTIN)
    names += [
        ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name not in names
    ]
    return names


def _instantiate(obj: object, spec: Spec, origin: str, name: str | None = None) -> Adapter:
    if isinstance(obj, Adapter):
        if spec.options:
            raise AdapterLoadError(f"{origin}: is an adapter instance, it takes no options")
        return obj
    if inspect.isclass(obj) and issubclass(obj, Adapter):
        try:
            return obj(**spec.options)
        except (TypeError, ValueError) as e:
            raise AdapterLoadError(f"{origin}: bad options {spec.options}: {e}") from None
    if is_torch_module_class(type(obj)):
        raise AdapterLoadError(
            f"{origin}: is an instance of the torch module {type(obj).__qualname__}, with its "
            "options fixed; name its class instead, which is constructed with each case's "
            "options (weight, ignore_index, reduction, label_smoothing, those it takes)"
        )
    if (inspect.isclass(obj) and not is_torch_module_class(obj)) or not callable(obj):
        raise AdapterLoadError(
            f"{origin}: is a {type(obj).__name__} {obj!r:.60}, expected an adapters.Adapter "
            "subclass or instance, a function with F.cross_entropy's signature, or a torch "
            "loss module class"
        )
    try:
        return adapt(obj, name=name or spec.target, **spec.options)
    except (ValueError, TypeError) as e:
        raise AdapterLoadError(f"{origin}: {e}") from e


def _pick(module: ModuleType, attr: str | None, origin: str) -> object:
    if attr:
        try:
            return getattr(module, attr)
        except AttributeError:
            raise AdapterLoadError(f"{origin}: module has no attribute {attr!r}") from None
    if hasattr(module, "adapter"):
        return module.adapter
    found = [
        v
        for v in vars(module).values()
        if inspect.isclass(v)
        and issubclass(v, Adapter)
        and v is not Adapter
        and v.__module__ == module.__name__
    ]
    if len(found) == 1:
        return found[0]
    if not found and callable(getattr(module, "cross_entropy", None)):
        return module.cross_entropy  # the common case: a plain function of that name
    raise AdapterLoadError(
        f"{origin}: name the object with ':attr' (the module defines no 'adapter', "
        f"no 'cross_entropy' function and {len(found)} Adapter subclasses)"
    )


def _import_file(path: Path, origin: str) -> ModuleType:
    """Import the file ``path`` with its folder first on sys.path, as Python runs a script:
    an adapter file imports its siblings (the kernel it wraps, helpers) from any working
    directory, and functions that import them when called find them too."""
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"lossconf_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AdapterLoadError(f"{origin}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise AdapterLoadError(f"{origin}: importing {path} raised {type(e).__name__}: {e}") from e
    return module


def resolve(text: str) -> Adapter:
    """The adapter named by ``text``; AdapterLoadError says what was tried and what is known."""
    try:
        adapter = _resolve(text)
    except AdapterLoadError as e:
        raise _with_known(e) from e.__cause__
    spec = parse_spec(text)
    if spec.semantics is not None:
        # this adapter's (an instance attribute), not its class's
        adapter.semantics = spec.semantics
    if spec.name is not None:
        adapter.name = spec.name
    try:
        dialect_named(adapter.semantics, f"adapter {adapter.name!r}: semantics")
    except ValueError as e:
        raise AdapterLoadError(str(e)) from None
    return adapter


def _with_known(error: AdapterLoadError) -> AdapterLoadError:
    message = str(error)
    if "Known adapters:" in message:
        return error
    return AdapterLoadError(f"{message}. Known adapters: {', '.join(known_names())}")


def _resolve(text: str) -> Adapter:
    spec = parse_spec(text)
    target = spec.target
    tried: list[str] = []
    if target in BUILTIN:
        mod_name, _, attr = BUILTIN[target].partition(":")
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise AdapterLoadError(
                f"built-in adapter {target!r} cannot be imported: {e}{_missing_framework(e)}"
            ) from e
        return _instantiate(getattr(module, attr), spec, f"adapter {target!r}")
    tried.append("built-in names")
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == target:
            try:
                obj = ep.load()
            except Exception as e:
                raise AdapterLoadError(
                    f"entry point {target!r} ({ep.value}) failed to load: {e}"
                ) from e
            return _instantiate(obj, spec, f"entry point {target!r}")
    tried.append(f"entry points in {ENTRY_POINT_GROUP!r}")
    path_part, _, attr = split_target(target)
    if names_file(path_part):
        path = Path(path_part)
        if not path.is_file():
            raise AdapterLoadError(_not_found(text, [*tried, f"file {path}"]))
        module = _import_file(path, text)
        return _instantiate(_pick(module, attr, text), spec, text, file_adapter_name(target))
    local = Path.cwd() / f"{path_part}.py"
    if local.is_file() and "." not in path_part:
        return _instantiate(_pick(_import_file(local, text), attr, text), spec, text)
    tried.append(f"./{path_part}.py")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(path_part)
    except ModuleNotFoundError as e:
        if e.name and path_part.startswith(e.name):
            raise AdapterLoadError(_not_found(text, [*tried, f"module {path_part!r}"])) from None
        raise AdapterLoadError(f"{text}: importing {path_part!r} failed: {e}") from e
    except Exception as e:
        raise AdapterLoadError(
            f"{text}: importing {path_part!r} raised {type(e).__name__}: {e}"
        ) from e
    return _instantiate(_pick(module, attr, text), spec, text)


def _not_found(text: str, tried: list[str]) -> str:
    known = known_names()
    close = difflib.get_close_matches(parse_spec(text).target, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"adapter {text!r} not found{hint}; tried {', '.join(tried)}. "
        f"Known adapters: {', '.join(known)}"
    )


def install_command(module: str) -> str | None:
    """``pip install 'lossconf[EXTRA]'`` for a framework one of lossconf's extras brings
    (read from the installed package's metadata, where pyproject.toml defines the extras);
    None for any other module."""
    top = module.split(".")[0]
    wanted = DISTRIBUTIONS.get(top, top).replace("_", "-").lower()
    try:
        requires = metadata.requires("lossconf") or []
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return None
    for line in requires:
        name = re.split(r"[\s;<>=!~\[]", line, maxsplit=1)[0].replace("_", "-").lower()
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", line)
        if name == wanted and extra and extra.group(1) not in ("all", "dev"):
            return f"pip install 'lossconf[{extra.group(1)}]'"
    return None


def _missing_framework(error: BaseException) -> str:
    """'; install it with: pip install ...' when ``error`` is a framework's ImportError."""
    name = getattr(error, "name", None)
    command = install_command(name) if isinstance(error, ImportError) and name else None
    return f"; install it with: {command}" if command else ""


def load(text: str) -> Adapter:
    """Resolve and load an adapter (imports its framework)."""
    adapter = resolve(text)
    try:
        adapter.load()
    except Exception as e:
        raise _with_known(
            AdapterLoadError(
                f"adapter {adapter.name!r} cannot run here: {type(e).__name__}: {e}"
                f"{_missing_framework(e)}"
            )
        ) from e
    return adapter


def describe(adapter: Adapter, spec: str) -> dict[str, str]:
    """What an adapter wraps, for reports and expectations: name, spec, wraps
    ('torch 2.13.0'), library ('torch'), version ('2.13.0'), device, semantics ('torch')."""
    wraps = adapter.version()
    library, _, version = wraps.partition(" ")
    return {
        "name": adapter.name,
        "spec": spec,
        "wraps": wraps,
        "library": library,
        "version": version.strip(),
        "device": adapter.device(),
        "semantics": adapter.semantics,
    }


def requirements(name: str) -> tuple[str, ...]:
    """Modules a built-in adapter needs, read from its class without importing a framework."""
    where = BUILTIN.get(name, "")
    if ":" not in where:
        return ()
    module_name, _, attr = where.partition(":")
    module = importlib.import_module(module_name)
    return tuple(getattr(getattr(module, attr), "requires", ()))

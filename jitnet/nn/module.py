"""Module, Parameter and Sequential: the containers every layer builds on.

A :class:`Module` holds :class:`Parameter` objects and child modules, runs its
forward pass on the kernels of the active target and keeps what its backward pass
needs on ``self``. ``backward(dy)`` returns the gradient with respect to the input
and *overwrites* ``param.grad`` of every parameter it owns (gradients are not
accumulated across calls, so ``zero_grad`` is never needed between steps). It works
from what the module's *last* forward kept, so it belongs right after the forward of
the step: run a validation forward after it, not in between.
``Conv2d``, ``Linear`` and ``Sequential`` also take ``backward(dy, input_grad=False)``:
parameter gradients only, as PyTorch computes for an input that does not require
grad (:func:`backward_without_input_grad` calls any module that way when it can).
"""

import functools
import inspect
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .. import rng
from .._checks import check_flag, is_int
from ..kernels import precompile
from ..targets import backend, get_target, is_device_array, to_numpy


class Parameter:
    """A trainable array with its gradient and its optimizer state.

    Attributes
    ----------
    data : array of the target
        The values (``np.ndarray`` on "numpy" and "cpu", a device array on "cuda").
    grad : array of the target, or None
        Set (overwritten) by the owning module's ``backward``.
    name : str
        The attribute name in its module (``"weight"``, ``"bias"``).
    state : dict
        Per-parameter optimizer buffers (``"momentum_buffer"``, ``"exp_avg"``,
        ``"step"``, ...), kept here so that :meth:`Module.to` moves them along with
        ``data`` and ``grad``.
    """

    def __init__(self, data, name=""):
        self.data = data
        self.grad = None
        self.name = name
        self.state = {}

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return np.dtype(self.data.dtype)

    def __repr__(self):
        return f"Parameter(name={self.name!r}, shape={self.shape}, dtype={self.dtype})"


def like(reference, host):
    """Host array ``host`` placed where ``reference`` lives (the device, or the host)."""
    if is_device_array(reference):
        return backend("cuda").asarray(host)
    return np.ascontiguousarray(host)


def _float_dtype(owner, dtype):
    """``dtype`` as np.float32 or np.float64 (the kernels' types), else a ValueError."""
    try:
        as_dtype = np.dtype(dtype)
    except TypeError:
        as_dtype = None  # (and not np.dtype(None), which is float64)
    if as_dtype is None or as_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        got = repr(dtype) if as_dtype is None else as_dtype  # int32, whether given as str or type
        raise ValueError(f"{owner} expected dtype float32 or float64, got {got}")
    return as_dtype


#: What ``Module.__init__`` sets up: missing only when a subclass skipped it.
_REGISTRIES = ("_parameters", "_modules", "_buffers", "training")


def _typename(value):
    """``numpy.ndarray``, ``list``: the type of ``value`` as PyTorch's messages name it."""
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _check_initialised(module, name, value):
    """Raise AttributeError for a Parameter or Module assigned before ``Module.__init__``
    ran (a subclass that forgot ``super().__init__()``); other attributes may be set."""
    if isinstance(value, (Parameter, Module)):
        what = "parameter" if isinstance(value, Parameter) else "module"
        raise AttributeError(
            f"cannot assign {what} {name!r} before Module.__init__() call: "
            f"{type(module).__name__}.__init__ must call super().__init__() first"
        )


def _move(a, target, dtype):
    """``a`` (any target's array) as an array of ``target``, optionally cast."""
    if a is None:
        return None
    host = to_numpy(a)
    if dtype is not None and host.dtype.kind == "f":
        host = host.astype(dtype)
    return backend(target).asarray(host)


def zero_grads(owner, params, set_to_none, describe):
    """What ``zero_grad(set_to_none)`` does, for a module's or an optimizer's parameters.

    Parameters
    ----------
    owner : str
        Who asks (``"SGD.zero_grad"``), for the messages.
    params : list of Parameter
    set_to_none : bool
        Set each ``grad`` to None; else fill each gradient array with zeros in place
        (``grad`` stays the same object; None stays None), as PyTorch does.
    describe : callable
        ``describe(i)``: what a message calls ``params[i]`` (``"parameter '0.weight'"``);
        called only for a message, so that a training step formats no names.
    """
    set_to_none = check_flag(owner, "set_to_none", set_to_none)
    if set_to_none:
        for p in params:
            p.grad = None
        return
    for i, p in enumerate(params):  # all checked first: a refused one leaves every grad
        grad = p.grad
        if isinstance(grad, np.ndarray) and not grad.flags.writeable:
            raise ValueError(f"{owner}: {describe(i)} has a read-only .grad, which "
                             "set_to_none=False would fill with zeros in place")
        if not (grad is None or isinstance(grad, np.ndarray) or is_device_array(grad)):
            raise TypeError(f"{owner}: {describe(i)} expected .grad to be an array or None, "
                            f"got {type(grad).__name__}")
    for p in params:
        if p.grad is not None:
            _fill_with_zeros(p.grad)


def _fill_with_zeros(a):
    """Set every element of ``a`` (a host or a device array) to 0, in place."""
    if not is_device_array(a):
        a.fill(0)
    elif a.is_c_contiguous():  # on the device: the cuda target's fill kernel
        backend("cuda").fill_zeros(a)
    else:
        a[:] = 0  # a strided view: numba-cuda's assignment kernel


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` returns, as PyTorch's ``_IncompatibleKeys``.

    Attributes
    ----------
    missing_keys : list
        The module's keys that the state lacks.
    unexpected_keys : list
        The state's keys that the module lacks.

    Both are empty when every key matched, which reads ``<All keys matched
    successfully>``.
    """

    missing_keys: list
    unexpected_keys: list

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return (f"IncompatibleKeys(missing_keys={self.missing_keys!r}, "
                f"unexpected_keys={self.unexpected_keys!r})")

    __str__ = __repr__


class Module:
    """Base class of layers and containers.

    Subclasses assign :class:`Parameter` and :class:`Module` attributes in
    ``__init__`` (after ``super().__init__()``); they are registered in assignment
    order, which is the order of :meth:`parameters`. Arrays that are state but not
    trained (BatchNorm's running statistics) are registered with
    :meth:`register_buffer`.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        # As PyTorch's: a Parameter (a Module) is registered, in assignment order (one
        # that replaces another keeps its place). Over a registered parameter (child)
        # only another one or None may go, None unregistering it: anything else is a
        # TypeError, as a plain array there would drop the weight from parameters(),
        # state_dict() and the optimizer without a word. A buffer takes arrays only.
        params = self.__dict__.get("_parameters")
        if params is None:
            _check_initialised(self, name, value)
        elif isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._buffers.pop(name, None)
            value.name = name
            params[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{_typename(value)}' as parameter {name!r} of "
                    f"{type(self).__name__} (jitnet.nn.Parameter or None expected): set "
                    f"{name}.data to change its values"
                )
            del params[name]
        elif isinstance(value, Module):
            self._buffers.pop(name, None)
            self._modules[name] = value
        elif name in self._modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{_typename(value)}' as child module {name!r} of "
                    f"{type(self).__name__} (jitnet.nn.Module or None expected)"
                )
            del self._modules[name]
        elif name in self._buffers:
            if not (isinstance(value, np.ndarray) or is_device_array(value)):
                raise TypeError(
                    f"cannot assign '{_typename(value)}' as buffer {name!r} of "
                    f"{type(self).__name__} (an array of the target expected)"
                )
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # reached only when the normal lookup failed
        if name in _REGISTRIES:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}: its __init__ "
                f"did not call super().__init__() (call it first, as for torch.nn.Module)",
                name=name, obj=self,
            )
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self
        )

    def register_buffer(self, name, array):
        """Register a non-trained array saved in :meth:`state_dict` and moved by :meth:`to`."""
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    # -- forward / backward -------------------------------------------------------------

    def forward(self, x):
        """The module's output for input ``x``; a subclass defines it."""
        raise NotImplementedError(
            f"{type(self).__name__}.forward(x) is not implemented: a subclass of "
            "jitnet.nn.Module defines forward(x), keeping on self what its backward needs"
        )

    def backward(self, dy):
        """The gradient of the input, ``dx``, for ``dy``, the gradient of the output.

        A subclass defines it (jitnet has no autograd): it sets ``p.grad`` of its own
        parameters and returns ``dx``, from what its *last* forward kept on ``self``
        (as cs231n's layers do). So backward belongs right after the forward of the
        step: a forward on another batch in between (a validation batch, say) makes
        backward use that batch's activations. Run it after backward.
        """
        raise NotImplementedError(
            f"{type(self).__name__}.backward(dy) is not implemented: jitnet modules need "
            "an explicit backward pass, backward(self, dy) setting p.grad of the module's "
            "parameters and returning dx, the gradient with respect to forward's input"
        )

    def __call__(self, *args):
        return self.forward(*args)

    # -- parameters and state -----------------------------------------------------------

    def named_parameters(self, prefix=""):
        """Yield ``(dotted_name, Parameter)``: this module's own, then its children's."""
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, child in self._modules.items():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self):
        """Yield all parameters, layer by layer, ``weight`` before ``bias`` (PyTorch's
        order); ``list(model.parameters())`` for a list."""
        for _, p in self.named_parameters():
            yield p

    def zero_grad(self, set_to_none=True):
        """Reset every parameter's gradient, as PyTorch's ``Module.zero_grad``.

        Parameters
        ----------
        set_to_none : bool, default True
            Forget each gradient (``grad = None``). With False, each gradient array
            is filled with zeros in place, where it lives (host or device); a
            parameter without a gradient keeps ``grad = None``. Training gives the
            same bits either way: ``backward`` overwrites ``grad``.

        Raises
        ------
        TypeError
            When ``set_to_none`` is not a bool, or (set_to_none=False) a gradient is
            neither an array nor None.
        ValueError
            When (set_to_none=False) a gradient is a read-only array. Every gradient
            is checked before any is filled.
        """
        named = list(self.named_parameters())
        zero_grads(f"{type(self).__name__}.zero_grad", [p for _, p in named], set_to_none,
                   lambda i: f"parameter {named[i][0]!r}")

    def named_buffers(self, prefix=""):
        """Yield ``(dotted_name, array)`` of the buffers (BatchNorm's running statistics)."""
        for name in self._buffers:
            yield prefix + name, getattr(self, name)
        for name, child in self._modules.items():
            yield from child.named_buffers(prefix + name + ".")

    def buffers(self):
        """Yield the buffers' arrays, in :meth:`named_buffers` order."""
        for _, array in self.named_buffers():
            yield array

    def named_children(self):
        """Yield ``(name, module)`` of the direct children, in registration order."""
        yield from self._modules.items()

    def children(self):
        """Yield the direct children, in registration order."""
        yield from self._modules.values()

    def named_modules(self, prefix=""):
        """Yield ``(dotted_name, module)`` of this module (name ``prefix``, ``""`` at the
        top) and all its descendants, depth first, as PyTorch's."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        """This module and all its descendants, depth first."""
        for _, module in self.named_modules():
            yield module

    def state_dict(self):
        """Parameters and buffers as host copies: ``{"0.weight": np.ndarray, ...}``."""
        state = {}
        for module_prefix, module in self._prefixed_modules():
            for name, p in module._parameters.items():
                state[module_prefix + name] = np.array(to_numpy(p.data))
            for name in module._buffers:
                state[module_prefix + name] = np.array(to_numpy(getattr(module, name)))
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` (as made by :meth:`state_dict`) into this module.

        Arrays go where each parameter lives now, in its current dtype. Every array
        is checked before any is copied: a rejected ``state`` leaves the module as
        it was.

        Parameters
        ----------
        state : Mapping
            ``{"0.weight": array, ...}``, the keys of :meth:`state_dict`.
        strict : bool, default True
            Whether the keys of ``state`` must be exactly those of
            :meth:`state_dict`. With False, the arrays under the keys they share are
            copied and the other keys are ignored (a ``num_batches_tracked`` of a
            PyTorch BatchNorm, say); the return value lists them.

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``, two lists as PyTorch's: this
            module's keys that ``state`` lacks, in :meth:`state_dict` order, and the
            keys of ``state`` this module lacks, in ``state``'s order module by
            module (those at the top level first). Both empty when every key
            matched, as they are whenever ``strict`` is True.

        Raises
        ------
        TypeError
            When ``state`` is not a mapping or ``strict`` is not a bool.
        ValueError
            When ``strict`` is True and a key is missing or unexpected, and (whatever
            ``strict`` is) when an array of a shared key has another shape or is not
            numeric.
        """
        strict = check_flag(f"{type(self).__name__}.load_state_dict", "strict", strict)
        if not isinstance(state, Mapping):
            raise TypeError(
                f"load_state_dict expected a mapping from state_dict(), got "
                f"{type(state).__name__}"
            )
        expected = {}
        for module_prefix, module in self._prefixed_modules():
            for name, p in module._parameters.items():
                expected[module_prefix + name] = (module, name, p)
            for name in module._buffers:
                expected[module_prefix + name] = (module, name, None)
        missing = [key for key in expected if key not in state]
        unexpected = self._in_pytorchs_order([key for key in state if key not in expected])
        if strict and (missing or unexpected):
            hint = ""
            if any(str(key).endswith("num_batches_tracked") for key in unexpected):
                hint = (" (num_batches_tracked is PyTorch's BatchNorm step counter, which "
                        "jitnet does not keep: leave those keys out)")
            raise ValueError(
                f"load_state_dict: missing keys {sorted(missing)}, unexpected keys "
                f"{sorted(unexpected, key=str)}{hint}"  # any keys, ints too
            )
        checked = []
        for key, (module, name, p) in expected.items():
            if key not in state:
                continue
            current = p.data if p is not None else getattr(module, name)
            value = np.asarray(state[key])
            if value.shape != tuple(current.shape):
                raise ValueError(
                    f"load_state_dict: {key} expected shape {tuple(current.shape)}, "
                    f"got {value.shape}"
                )
            if value.dtype.kind not in "biuf":
                raise ValueError(
                    f"load_state_dict: {key} expected a numeric array, got dtype {value.dtype}"
                )
            checked.append((module, name, p, current, value))
        for module, name, p, current, value in checked:  # all checked: nothing can fail now
            array = like(current, value.astype(current.dtype))
            if p is not None:
                p.data = array
            else:
                setattr(module, name, array)
        return IncompatibleKeys(missing, unexpected)

    def _in_pytorchs_order(self, keys):
        """``keys`` (of a state this module lacks) grouped as PyTorch's load_state_dict
        lists them: by the module whose child names they run through, modules in
        :meth:`named_modules` order, keys of one module in their given order."""
        rank = {prefix: i for i, (prefix, _) in enumerate(self._prefixed_modules())}

        def owner(key):  # the longest module prefix of key; the top module for any other
            if not isinstance(key, str):
                return 0
            return max((i for prefix, i in rank.items() if key.startswith(prefix)), default=0)

        return sorted(keys, key=owner)  # a stable sort

    def _prefixed_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child._prefixed_modules(prefix + name + ".")

    # -- modes and placement ------------------------------------------------------------

    def train(self, mode=True):
        """Training mode (Dropout drops, BatchNorm uses batch statistics); returns self.

        ``mode`` is a bool (``train(False)`` is :meth:`eval`); anything else is a
        TypeError (``bool("False")`` is True).
        """
        mode = check_flag(f"{type(self).__name__}.train", "mode", mode)
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Evaluation mode (Dropout is the identity, BatchNorm uses running statistics)."""
        return self.train(False)

    def to(self, target=None, dtype=None):
        """Move parameters, gradients, optimizer state and buffers; returns self.

        Parameters
        ----------
        target : {"numpy", "cpu", "cuda"}, optional
            Where the arrays go (default: the active target). This moves arrays only:
            make ``target`` the active one (``jitnet.set_target``) to run the model
            there.
        dtype : {"float32", "float64"}, optional
            Cast floating arrays, e.g. ``np.float64`` for gradient checks (the
            kernels have no other floating type).
        """
        target = get_target() if target is None else target
        backend(target)  # fail early (unknown or unavailable target)
        if dtype is not None:
            dtype = _float_dtype(type(self).__name__ + ".to", dtype)
        for m in self.modules():
            for p in m._parameters.values():
                p.data = _move(p.data, target, dtype)
                p.grad = _move(p.grad, target, dtype)
                for key, value in p.state.items():
                    if isinstance(value, np.ndarray) or is_device_array(value):
                        p.state[key] = _move(value, target, dtype)
            for name in m._buffers:
                setattr(m, name, _move(getattr(m, name), target, dtype))
            m._clear_cache()
        return self

    def _clear_cache(self):
        """Drop arrays kept for backward (they may live on another target)."""
        for name in [k for k in vars(self) if k.startswith("_saved_")]:
            object.__setattr__(self, name, None)

    # -- printing -----------------------------------------------------------------------

    def extra_repr(self):
        return ""

    def __repr__(self):
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        lines.append(")")
        return "\n".join(lines)


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    Children are named ``"0"``, ``"1"``, ... so ``state_dict`` keys read
    ``"0.weight"``, as in PyTorch.

    Notes
    -----
    A ``ReLU`` directly followed by a ``MaxPool2d`` runs after it instead: ReLU
    and max commute, ``maxpool(relu(x)) == relu(maxpool(x))``, so the output and
    every gradient are the same while the ReLU touches a quarter of the elements
    (for 2x2 pooling). Only the recorded argmax of a window whose maximum is not
    positive may differ, and the gradient routed there is zero either way. Other
    activations keep their place: a saturating one (sigmoid) can tie values that
    differ, and its gradient there is not zero.

    A ``Conv2d`` then running directly before a ``MaxPool2d`` runs with it as one
    kernel call (``Conv2d._forward_pooled``): the same results, bit for bit, and
    the same saved state for backward, but the cpu and cuda targets never store the
    convolution's output (for 2x2 pooling). A ``ReLU`` then running after that
    pooling joins the same call, applied to the maxima on their way out. Going
    back, the three (or two) go back in one call too (``Conv2d._backward_pooled``):
    the same gradients, and on the numpy and cuda targets the same bits; the cpu
    target sums the weight and bias gradients of a stride-1 convolution with 2x2
    pooling from the pooling's windows, in another order (the last bits differ).
    Elsewhere the ReLU after a pooling goes back with it (``MaxPool2d._backward_relu``),
    bit for bit.

    A ``BatchNorm2d`` directly before a ``MaxPool2d`` (and the ``ReLU`` after it)
    runs with it in one call the same way (``BatchNorm2d._forward_pooled``): the cpu
    and cuda targets never store the normalised images.

    Likewise a ``ReLU`` directly after a ``Linear`` runs in that layer's call
    (``Linear._forward_relu``), and going back a ``ReLU`` directly before a
    ``Linear`` runs in that layer's input gradient (``Linear._backward_relu``): on
    the cuda target in the matrix product's launch, bit for bit.
    """

    def __init__(self, *modules):
        super().__init__()
        for m in modules:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential expected Module arguments, got {type(m).__name__}")
        _check_each_once(modules)
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def _run_order(self):
        """The children in the order they run (see the class notes)."""
        from .layers import MaxPool2d, ReLU  # layers imports this module

        order = list(self._modules.values())
        for i in range(len(order) - 1):
            if type(order[i]) is ReLU and type(order[i + 1]) is MaxPool2d:
                order[i], order[i + 1] = order[i + 1], order[i]
        return order

    def forward(self, x):
        from .layers import BatchNorm2d, Conv2d, Linear, MaxPool2d, ReLU

        if self.training and get_target() == "cpu":
            precompile.maybe_start(self, x)  # once per process, on a cold first run
        order = self._run_order()
        i = 0
        while i < len(order):
            m = order[i]
            after = type(order[i + 1]) if i + 1 < len(order) else None
            if type(m) in (Conv2d, BatchNorm2d) and after is MaxPool2d:
                relu = order[i + 2] if i + 2 < len(order) and type(order[i + 2]) is ReLU else None
                x = m._forward_pooled(x, order[i + 1], relu)  # one kernel call for them
                i += 2 if relu is None else 3
            elif type(m) is Linear and after is ReLU:
                x = m._forward_relu(x, order[i + 1])  # the ReLU in the product's epilogue
                i += 2
            else:
                x = m(x)
                i += 1
        return x

    def backward(self, dy, input_grad=True):
        """Backward through the children in reverse; returns ``dx``.

        Each child goes back from what its *last* forward kept (as cs231n's layers
        do; there is no graph per call as in PyTorch): run backward right after the
        forward whose loss ``dy`` is the gradient of. A forward on another batch in
        between, e.g. scoring a validation batch, would silently mix that batch's
        activations into the gradients (a batch of another size is caught); score it
        after backward (or after the optimizer's step).

        With ``input_grad=False`` nothing is computed for the input (None is
        returned): children before the first one with parameters are skipped, and
        that one is asked for its parameter gradients only (a first convolution
        then skips its input gradient, as in PyTorch).
        """
        modules = self._run_order()
        if input_grad:
            return _backward_through(modules, dy)
        first = next((i for i, m in enumerate(modules) if has_parameters(m)), None)
        if first is not None:
            end = {conv: end for end, conv in _pooled_convs(modules).items()}.get(first)
            if end is not None:  # the three (or two) in one call, as forward ran them
                dy = _backward_through(modules[end + 1 :], dy)
                _backward_pooled(modules, end, first, dy, input_grad=False)
                return None
            dy = _backward_through(modules[first + 1 :], dy)
            backward_without_input_grad(modules[first], dy)
        return None

    def __getitem__(self, i):
        """The child at ``i``; a slice is a ``Sequential`` of those children (the same
        module objects, as PyTorch's)."""
        children = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(*children[i])
        if not is_int(i):
            raise TypeError(f"Sequential indices must be ints or slices, got {type(i).__name__}")
        if not -len(children) <= i < len(children):
            raise IndexError(f"Sequential index {i} out of range for {len(children)} modules")
        return children[int(i)]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


def _check_each_once(modules):
    """Raise ValueError when one module object appears twice among ``modules`` and their
    descendants (``relu = ReLU(); Sequential(fc1, relu, fc2, relu)``, fine in PyTorch).

    A module keeps what its backward needs from its last forward on itself, so the
    second place's forward would overwrite the first's and the gradients would come out
    wrong (or read past an array's end in a fused kernel); a shared layer's parameters
    would also be updated twice a step.
    """
    places = {}
    for i, m in enumerate(modules):
        for prefix, inner in m._prefixed_modules(f"{i}."):
            name = prefix[:-1]
            if id(inner) in places:
                raise ValueError(
                    f"Sequential got the same {type(inner).__name__} object at {places[id(inner)]} "
                    f"and at {name}: a module keeps what its backward needs from its last "
                    f"forward, so each place needs its own (a new {type(inner).__name__}(...) "
                    "for each)"
                )
            places[id(inner)] = name


def _pooled_convs(modules):
    """``{index of a group's last module: index of its Conv2d}`` for each ``Conv2d``
    in ``modules`` (a run order) that forward ran with the ``MaxPool2d`` after it (and
    the ``ReLU`` after that, the group's last module then)."""
    from .layers import Conv2d, MaxPool2d, ReLU

    ends = {}
    for i in range(len(modules) - 1):
        if type(modules[i]) is Conv2d and type(modules[i + 1]) is MaxPool2d:
            relu = i + 2 < len(modules) and type(modules[i + 2]) is ReLU
            ends[i + 1 + relu] = i
    return ends


def _backward_pooled(modules, end, conv, dy, input_grad=True):
    """``dy`` back through the group ``modules[conv : end + 1]`` in one call."""
    relu = modules[end] if end == conv + 2 else None
    return modules[conv]._backward_pooled(dy, modules[conv + 1], relu, input_grad)


def _backward_through(modules, dy):
    """``dy`` back through ``modules`` (in their run order), last first.

    A ``Conv2d`` with the ``MaxPool2d`` after it (and the ``ReLU`` after that) goes
    back in one kernel call, as forward ran them (``Conv2d._backward_pooled``). Else a
    ``ReLU`` that runs after a ``MaxPool2d`` goes back with it in one kernel call
    (``MaxPool2d._backward_relu``), and one that runs before a ``Linear`` with that
    layer's input gradient (``Linear._backward_relu``): the same gradient, bit for
    bit, without a pass of its own.
    """
    from .layers import Linear, MaxPool2d, ReLU

    ends = _pooled_convs(modules)
    i = len(modules) - 1
    while i >= 0:
        m = modules[i]
        before = type(modules[i - 1]) if i > 0 else None
        if i in ends:
            dy = _backward_pooled(modules, i, ends[i], dy)
            i = ends[i] - 1
        elif type(m) is ReLU and before is MaxPool2d:
            dy = modules[i - 1]._backward_relu(dy, m)
            i -= 2
        elif type(m) is Linear and before is ReLU:
            dy = m._backward_relu(dy, modules[i - 1])
            i -= 2
        else:
            dy = m.backward(dy)
            i -= 1
    return dy


def has_parameters(module):
    """Whether ``module`` (or a descendant) has at least one parameter."""
    return next(module.parameters(), None) is not None


@functools.lru_cache(maxsize=None)
def _takes_input_grad(cls):
    return "input_grad" in inspect.signature(cls.backward).parameters


def backward_without_input_grad(module, dy):
    """Parameter gradients of ``module`` for upstream gradient ``dy``; returns None.

    ``module.backward(dy, input_grad=False)`` where its ``backward`` takes that
    keyword (Sequential, Conv2d, Linear), else a plain ``module.backward(dy)``
    whose input gradient is dropped. The training loop calls this: the batch
    itself needs no gradient.
    """
    if _takes_input_grad(type(module)):
        module.backward(dy, input_grad=False)
    else:
        module.backward(dy)


# -- initialisation and input handling shared by the layers ------------------------------


def kaiming_uniform(shape, fan_in, dtype):
    """PyTorch's default init, ``kaiming_uniform_(a=sqrt(5))``: ``U(-1/sqrt(fan_in), ...)``.

    Drawn on the host from :func:`jitnet.rng.generator` (so :func:`jitnet.manual_seed`
    makes it reproducible), then placed on the active target. The same bound is
    PyTorch's bias init.
    """
    bound = 1.0 / np.sqrt(fan_in) if fan_in > 0 else 0.0
    values = rng.generator().uniform(-bound, bound, size=shape).astype(dtype)
    return backend().asarray(values)


def as_input(x):
    """``x`` as an array of the active target (host arrays are converted, not copied).

    On the host targets a C-contiguous array passes through as it is: the cpu
    target's ``asarray`` copies a large misaligned array into aligned memory, which
    pays for a parameter read every step, not for a batch read once.
    """
    if is_device_array(x):
        return x
    if get_target() == "cuda":
        return backend().asarray(np.asarray(x))
    return np.asarray(x, order="C")  # (np.ascontiguousarray makes a 0-d array 1-d)


def check_placement(owner, data):
    """Raise RuntimeError when ``data`` (a parameter's or buffer's array) lives on the
    device but the target is not cuda, or the other way round (instead of a typing error
    from deep inside a kernel)."""
    on_device = is_device_array(data)
    target = get_target()
    if on_device != (target == "cuda"):
        where = "the cuda device" if on_device else "the host"
        raise RuntimeError(
            f"{owner}'s parameters live on {where} but the active target is {target!r}: "
            f"call jitnet.set_target(...) to match, or move the model with model.to({target!r})"
        )
